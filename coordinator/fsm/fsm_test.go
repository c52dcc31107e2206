package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/raft"
)

func mustEncode(t testing.TB, ct CommandType, v any) []byte {
	t.Helper()
	b, err := Encode(ct, v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func node(id string, role Role) Node {
	return Node{ID: id, Role: role, GRPCAddr: id + ":1", Devices: []Device{{Kind: "cpu", Name: "epyc"}}}
}

func TestApply(t *testing.T) {
	tests := []struct {
		name    string
		cmds    [][]byte
		wantErr error
		want    map[string]NodeState
	}{
		{
			name: "register is active",
			cmds: [][]byte{mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("p1", RolePrefill), At: 5})},
			want: map[string]NodeState{"p1": StateActive},
		},
		{
			name: "drain then re-register keeps draining",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining}),
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
			},
			want: map[string]NodeState{"d1": StateDraining},
		},
		{
			name: "dead node re-registers active",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDead}),
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
			},
			want: map[string]NodeState{"d1": StateActive},
		},
		{
			name: "conditional change that lost the race changes nothing",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateActive, From: StateDead}),
			},
			wantErr: ErrStale,
			want:    map[string]NodeState{"d1": StateDraining},
		},
		{
			name: "conditional change about an earlier stay in the state changes nothing",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining, At: 10}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateActive, At: 11}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining, At: 12}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDrained, From: StateDraining, FromSince: 10, At: 13}),
			},
			wantErr: ErrStale,
			want:    map[string]NodeState{"d1": StateDraining},
		},
		{
			name: "conditional change about the current stay applies",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("d1", RoleDecode)}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining, At: 12}),
				mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDrained, From: StateDraining, FromSince: 12, At: 13}),
			},
			want: map[string]NodeState{"d1": StateDrained},
		},
		{
			name:    "state of unknown node",
			cmds:    [][]byte{mustEncode(t, CmdSetNodeState, SetNodeState{ID: "x", State: StateDead})},
			wantErr: ErrNotFound,
			want:    map[string]NodeState{},
		},
		{
			name:    "bad role",
			cmds:    [][]byte{mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("x", "chef")})},
			wantErr: ErrInvalid,
			want:    map[string]NodeState{},
		},
		{
			name:    "unknown command",
			cmds:    [][]byte{{42, '{', '}'}},
			wantErr: ErrUnknownCommand,
			want:    map[string]NodeState{},
		},
		{
			name: "unknown optional command is skipped",
			cmds: [][]byte{{42 | byte(IgnoreUnknownFlag), '{', '}'}},
			want: map[string]NodeState{},
		},
		{
			name:    "garbage payload",
			cmds:    [][]byte{{byte(CmdRegisterNode), 'x'}},
			wantErr: ErrDecode,
			want:    map[string]NodeState{},
		},
		{
			name:    "empty entry",
			cmds:    [][]byte{{}},
			wantErr: ErrDecode,
			want:    map[string]NodeState{},
		},
		{
			name: "remove",
			cmds: [][]byte{
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("a", RoleGateway)}),
				mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("b", RoleGateway)}),
				mustEncode(t, CmdRemoveNode, RemoveNode{ID: "a"}),
			},
			want: map[string]NodeState{"b": StateActive},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := New(nil, nil)
			var last error
			for i, c := range tt.cmds {
				r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c})
				last, _ = r.(error)
			}
			if !errors.Is(last, tt.wantErr) {
				t.Fatalf("last error = %v, want %v", last, tt.wantErr)
			}
			got := map[string]NodeState{}
			for id, n := range f.State().Nodes {
				got[id] = n.State
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("states (-want +got):\n%s", d)
			}
			if f.State().Index != uint64(len(tt.cmds)) {
				t.Errorf("index = %d, want %d", f.State().Index, len(tt.cmds))
			}
		})
	}
}

func TestApplyDoesNotMutatePublishedState(t *testing.T) {
	f := New(nil, nil)
	f.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("a", RoleDecode)})})
	before := f.State()
	f.Apply(&raft.Log{Index: 2, Type: raft.LogCommand, Data: mustEncode(t, CmdSetNodeState, SetNodeState{ID: "a", State: StateDraining})})
	if before.Nodes["a"].State != StateActive {
		t.Fatalf("published state mutated: %v", before.Nodes["a"].State)
	}
}

type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (m *memSink) ID() string    { return "mem" }
func (m *memSink) Cancel() error { m.cancelled = true; return nil }
func (m *memSink) Close() error  { return nil }

func TestSnapshotRoundTrip(t *testing.T) {
	f := New(nil, nil)
	cmds := [][]byte{
		mustEncode(t, CmdRegisterNode, RegisterNode{Node: node("p1", RolePrefill), At: 1}),
		mustEncode(t, CmdRegisterNode, RegisterNode{Node: Node{ID: "d1", Role: RoleDecode, GRPCAddr: "d:1", TPDegree: 2, Models: []string{"m"}, Pool: "gpu"}, At: 2}),
		mustEncode(t, CmdSetNodeState, SetNodeState{ID: "d1", State: StateDraining, Reason: "admin", At: 3}),
		mustEncode(t, CmdUpsertModel, UpsertModel{Model: Model{ID: "m", Pools: []string{"gpu"}, BlockTokens: 16}}),
		mustEncode(t, CmdSetPolicy, SetPolicy{Spec: []byte(`{"decider":{"name":"always-remote"}}`)}),
	}
	for i, c := range cmds {
		if r := f.Apply(&raft.Log{Index: uint64(i + 1), Type: raft.LogCommand, Data: c}); r != nil {
			t.Fatalf("apply %d: %v", i, r)
		}
	}
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := New(nil, nil)
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(f.State(), g.State()); d != "" {
		t.Errorf("restored state (-want +got):\n%s", d)
	}
}

func TestReadSnapshotRejects(t *testing.T) {
	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"bad header", "nope\n"},
		{"future version", `{"version":9}` + "\n"},
		{"empty record", `{"version":1}` + "\n{}\n"},
		{"invalid node", `{"version":1}` + "\n" + `{"node":{"id":"","role":"decode"}}` + "\n"},
		{"bad node state", `{"version":1}` + "\n" + `{"node":{"id":"a","role":"decode","grpc_addr":"x","state":"zombie"}}` + "\n"},
		{"empty model", `{"version":1}` + "\n" + `{"model":{"id":""}}` + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ReadSnapshot(bytes.NewReader([]byte(tt.in))); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("err = %v, want ErrSnapshot", err)
			}
		})
	}
}

func FuzzReadSnapshot(f *testing.F) {
	var buf bytes.Buffer
	st := newState()
	st.Nodes["a"] = Node{ID: "a", Role: RoleDecode, GRPCAddr: "x", State: StateActive}
	st.Models["m"] = Model{ID: "m"}
	if err := WriteSnapshot(&buf, st); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte(`{"version":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ReadSnapshot(bytes.NewReader(b))
		if err != nil {
			return
		}
		var out bytes.Buffer
		if err := WriteSnapshot(&out, st); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadSnapshot(&out); err != nil {
			t.Fatalf("re-read of written snapshot failed: %v", err)
		}
	})
}

func FuzzApply(f *testing.F) {
	f.Add(mustEncode(f, CmdRegisterNode, RegisterNode{Node: node("a", RoleDecode)}))
	f.Add(mustEncode(f, CmdSetPolicy, SetPolicy{Spec: []byte(`{}`)}))
	f.Add([]byte{byte(CmdSetNodeState), '{', '}'})
	f.Fuzz(func(t *testing.T, b []byte) {
		fsm := New(nil, nil)
		fsm.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: b})
		for _, n := range fsm.State().Nodes {
			if err := validateNode(&n); err != nil {
				t.Fatalf("applied invalid node: %v", err)
			}
		}
	})
}
