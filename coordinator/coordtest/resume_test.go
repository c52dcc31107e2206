package coordtest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// fakeDecode stands in for a decode worker's token stream: token i of a request is a pure
// function of the request id and i, so a stream resumed elsewhere from position n must produce
// exactly the tokens a single uninterrupted stream would have.
type fakeDecode struct {
	mu     sync.Mutex
	dead   bool
	killed chan struct{}
}

var errStreamBroken = errors.New("coordtest: decode stream broken")

func token(requestID string, i int) string { return fmt.Sprintf("%s#%d", requestID, i) }

// stream sends tokens from..max-1 to out, failing with errStreamBroken if the worker is killed.
func (d *fakeDecode) stream(ctx context.Context, requestID string, from, max int, out chan<- string) error {
	for i := from; i < max; i++ {
		select {
		case <-d.killed:
			return errStreamBroken
		case <-ctx.Done():
			return ctx.Err()
		case out <- token(requestID, i):
		}
		time.Sleep(time.Millisecond)
	}
	return nil
}

func (d *fakeDecode) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.dead {
		d.dead = true
		close(d.killed)
	}
}

// TestStreamResumesAfterDecodeDeath drives the resume path end to end the way a gateway does:
// it places a request, streams tokens from the decode worker, and when that worker dies
// mid-generation asks the coordinator to Resume with the tokens generated so far, then continues
// the same client stream from the new worker. The client must see every token exactly once.
func TestStreamResumesAfterDecodeDeath(t *testing.T) {
	c := MakeCluster(t, 3)
	cl := c.Client(t)
	setupModel(t, cl)
	decoders := map[string]*fakeDecode{}
	workers := map[string]*Worker{}
	for _, id := range []string{"d1", "d2", "d3"} {
		decoders[id] = &fakeDecode{killed: make(chan struct{})}
		workers[id] = c.AddWorker(t, id, "decode", nil)
	}
	ctx := ctxT(t, 20*time.Second)
	const maxTokens = 200
	req := &pb.PlaceRequest{RequestId: "chat-1", Model: "m", PromptTokens: 100, MaxTokens: maxTokens, BlockTokens: 16}
	p, err := cl.Place(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	first := p.GetDecode().GetNodeId()

	// The client's stream: everything the gateway forwards.
	var got []string
	out := make(chan string)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		for tok := range out {
			got = append(got, tok)
			if len(got) == 50 {
				// The decode worker crashes mid-generation: its process and gossip stop.
				decoders[first].kill()
				workers[first].Kill()
			}
		}
	}()

	generated, resumes := 0, 0
	for generated < maxTokens {
		d := decoders[p.GetDecode().GetNodeId()]
		counted := make(chan string)
		done := make(chan error, 1)
		go func() { done <- d.stream(ctx, "chat-1", generated, maxTokens, counted) }()
		var streamErr error
	forward:
		for {
			select {
			case tok := <-counted:
				out <- tok
				generated++
			case streamErr = <-done:
				break forward
			}
		}
		if streamErr == nil {
			break
		}
		if !errors.Is(streamErr, errStreamBroken) {
			t.Fatal(streamErr)
		}
		dead := p.GetDecode().GetNodeId()
		if p, err = cl.Resume(ctx, p, dead, generated, nil); err != nil {
			t.Fatalf("resume after %d tokens: %v", generated, err)
		}
		if p.GetDecode().GetNodeId() == dead {
			t.Fatalf("resumed on the dead worker %s", dead)
		}
		if err := client.VerifyTransferToken(Secret(), p, 0, time.Now()); err != nil {
			t.Fatalf("resume token: %v", err)
		}
		resumes++
	}
	close(out)
	<-collected

	want := make([]string, maxTokens)
	for i := range want {
		want[i] = token("chat-1", i)
	}
	if !slices.Equal(want, got) {
		t.Fatalf("client saw %d tokens with gaps or duplicates (first %v, last %v)", len(got), got[:3], got[len(got)-3:])
	}
	if resumes != 1 {
		t.Fatalf("%d resumes, want 1", resumes)
	}
	Eventually(t, 5*time.Second, "dead decode worker recorded", func() bool { return nodeState(c, first) == "dead" })
}
