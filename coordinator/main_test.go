package coordinator

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// memberlist's timer-driven helpers and raft's in-flight RPC goroutines exit shortly after
		// shutdown, on their own timers.
		goleak.IgnoreTopFunction("github.com/hashicorp/memberlist.(*Memberlist).triggerFunc"),
		goleak.IgnoreTopFunction("time.Sleep"),
	)
}
