package membership

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"))
}

type recorder struct {
	mu     sync.Mutex
	events []Event
}

func (r *recorder) HandleMembership(e Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) has(typ EventType, id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.events {
		if e.Type == typ && e.Member.ID == id {
			return true
		}
	}
	return false
}

func fastConfig(net *TestNetwork, id string, key []byte) Config {
	return Config{
		NodeID:         id,
		Transport:      net.NewTransport(id),
		SecretKey:      key,
		Meta:           Meta{Role: "decode", GRPCAddr: id + ":9000"},
		ProbeInterval:  50 * time.Millisecond,
		ProbeTimeout:   25 * time.Millisecond,
		SuspicionMult:  1,
		GossipInterval: 20 * time.Millisecond,
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJoinAndDeath(t *testing.T) {
	for _, key := range [][]byte{nil, []byte("0123456789abcdef")} {
		t.Run("encrypted="+map[bool]string{true: "yes", false: "no"}[key != nil], func(t *testing.T) {
			mn := NewTestNetwork()
			rec := &recorder{}
			ctx := context.Background()
			a, err := New(fastConfig(mn, "a", key), rec, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close(ctx)
			b, err := New(fastConfig(mn, "b", key), nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close(ctx)
			if err := b.Join(ctx, []string{a.LocalAddr()}); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "join event", func() bool { return rec.has(EventJoin, "b") })
			var got Meta
			for _, m := range a.Members() {
				if m.ID == "b" {
					got = m.Meta
				}
			}
			if d := cmp.Diff(Meta{Role: "decode", GRPCAddr: "b:9000"}, got); d != "" {
				t.Errorf("gossiped meta (-want +got):\n%s", d)
			}
			if err := b.Kill(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "leave event after crash", func() bool { return rec.has(EventLeave, "b") })
		})
	}
}

func TestWrongKeyCannotJoin(t *testing.T) {
	mn := NewTestNetwork()
	ctx := context.Background()
	a, err := New(fastConfig(mn, "a", []byte("0123456789abcdef")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close(ctx)
	b, err := New(fastConfig(mn, "b", []byte("fedcba9876543210")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(ctx)
	jctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	if err := b.Join(jctx, []string{a.LocalAddr()}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("join with wrong key: err = %v, want deadline exceeded", err)
	}
	if n := len(a.Members()); n != 1 {
		t.Fatalf("a sees %d members, want 1", n)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want error
	}{
		{"ok", Config{NodeID: "a", Meta: Meta{Role: "r", GRPCAddr: "g"}}, nil},
		{"no id", Config{Meta: Meta{Role: "r", GRPCAddr: "g"}}, ErrConfig},
		{"bad key", Config{NodeID: "a", SecretKey: []byte("x"), Meta: Meta{Role: "r", GRPCAddr: "g"}}, ErrConfig},
		{"huge meta", Config{NodeID: "a", Meta: Meta{Role: "r", GRPCAddr: strings.Repeat("g", 600)}}, ErrMetaTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestMetaRoundTrip(t *testing.T) {
	m := Meta{Role: "prefill", Version: "v0.1.0", GRPCAddr: "10.0.0.1:7000"}
	b, err := EncodeMeta(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeMeta(b)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(m, got); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := EncodeMeta(Meta{Role: "decode", GRPCAddr: "x:1"})
	f.Add(b)
	f.Add([]byte{1, '{', '}'})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeMeta(b)
		if err != nil {
			return
		}
		out, err := EncodeMeta(m)
		if err != nil {
			t.Fatalf("decoded meta does not re-encode: %v", err)
		}
		if len(out) > memberlist.MetaMaxSize {
			t.Fatalf("re-encoded meta too large")
		}
	})
}
