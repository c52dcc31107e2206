package coordinator_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// netLab is three network namespaces on one bridge: coordinator i lives in namespace i at
// 10.231.S.(i+2); the test process (client and fake workers) sits on the bridge at 10.231.S.1.
type netLab struct {
	t      *testing.T
	tag    string
	subnet string
	ns     []string
}

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// newNetLab builds the lab or skips the test when this machine cannot (not root, no ip tool, no
// namespace support).
func newNetLab(t *testing.T) *netLab {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network-namespace partition test needs root (CAP_NET_ADMIN); skipping")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network-namespace partition test needs the ip tool (iproute2); skipping")
	}
	id := os.Getpid() % 10000
	l := &netLab{t: t, tag: fmt.Sprintf("tdm%d", id), subnet: fmt.Sprintf("10.231.%d", id%250)}
	probe := l.tag + "probe"
	if err := ipCmd("netns", "add", probe); err != nil {
		t.Skipf("cannot create network namespaces here (%v); skipping", err)
	}
	_ = ipCmd("netns", "del", probe)
	t.Cleanup(l.teardown)
	br := l.tag + "b"
	steps := [][]string{{"link", "add", br, "type", "bridge"}, {"link", "set", br, "up"}, {"addr", "add", l.subnet + ".1/24", "dev", br}}
	for i := range 3 {
		ns, host, peer := fmt.Sprintf("%sn%d", l.tag, i), fmt.Sprintf("%sv%d", l.tag, i), fmt.Sprintf("%sp%d", l.tag, i)
		l.ns = append(l.ns, ns)
		steps = append(steps,
			[]string{"netns", "add", ns},
			[]string{"link", "add", host, "type", "veth", "peer", "name", peer},
			[]string{"link", "set", peer, "netns", ns},
			[]string{"link", "set", host, "master", br},
			[]string{"link", "set", host, "up"},
			[]string{"-n", ns, "addr", "add", l.ip(i) + "/24", "dev", peer},
			[]string{"-n", ns, "link", "set", peer, "up"},
			[]string{"-n", ns, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			t.Fatalf("building the network lab: %v", err)
		}
	}
	return l
}

func (l *netLab) ip(i int) string { return fmt.Sprintf("%s.%d", l.subnet, i+2) }

// cut blackholes traffic between coordinator i and every other coordinator, both ways. The test
// process and workers on the bridge still reach every node, so the isolated node can be observed.
func (l *netLab) cut(i int) {
	for j := range l.ns {
		if j == i {
			continue
		}
		for _, r := range [][2]int{{i, j}, {j, i}} {
			if err := ipCmd("-n", l.ns[r[0]], "route", "add", "blackhole", l.ip(r[1])+"/32"); err != nil {
				l.t.Fatal(err)
			}
		}
	}
}

func (l *netLab) heal(i int) {
	for j := range l.ns {
		if j == i {
			continue
		}
		for _, r := range [][2]int{{i, j}, {j, i}} {
			_ = ipCmd("-n", l.ns[r[0]], "route", "del", "blackhole", l.ip(r[1])+"/32")
		}
	}
}

func (l *netLab) teardown() {
	for i, ns := range l.ns {
		_ = ipCmd("link", "del", fmt.Sprintf("%sv%d", l.tag, i))
		_ = ipCmd("netns", "del", ns)
	}
	_ = ipCmd("link", "del", l.tag+"b")
}

// TestNetnsPartitionLeader isolates the leader from the other coordinators with real packet loss
// between network namespaces. The majority elects a new leader and keeps placing under a higher
// term; the isolated node steps down and places nothing; after the partition heals it follows the
// new leader.
func TestNetnsPartitionLeader(t *testing.T) {
	lab := newNetLab(t)
	bin := buildNode(t)
	dir := t.TempDir()
	var procs []*proc
	var addrs []string
	for i := range 3 {
		id := fmt.Sprint("c", i)
		g := lab.ip(i) + ":7000"
		args := []string{
			"--id", id, "--data-dir", fmt.Sprintf("%s/%s", dir, id),
			"--raft-addr", lab.ip(i) + ":7100", "--grpc-addr", g, "--gossip-addr", lab.ip(i) + ":7200",
			"--gossip-probe-interval", "200ms", "--dead-grace", "2s", "--log-level", "warn",
		}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", addrs[0])
		}
		procs = append(procs, startProc(t, bin, id, g, dir, []string{"ip", "netns", "exec", lab.ns[i]}, args))
		addrs = append(addrs, g)
		if i == 0 {
			waitCluster(t, newClient(t, g), 1)
		}
	}
	cl := newClient(t, addrs...)
	st := waitCluster(t, cl, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.SetModel(ctx, &pb.Model{Id: "m", BlockTokens: 16}); err != nil {
		t.Fatal(err)
	}
	startWorker(t, cl, "d0", "decode", lab.subnet+".1")

	old := leaderProc(st, procs)
	oi := int(old.id[1] - '0')
	cutAt := time.Now()
	lab.cut(oi)

	var others []string
	for i, a := range addrs {
		if i != oi {
			others = append(others, a)
		}
	}
	majority := newClient(t, others...)
	p, err := majority.Place(ctx, &pb.PlaceRequest{RequestId: "after-cut", Model: "m", PromptTokens: 64})
	if err != nil {
		t.Fatalf("majority cannot place after the partition: %v", err)
	}
	if p.GetTerm() <= st.GetTerm() {
		t.Fatalf("placement term %d not above the old leader's %d", p.GetTerm(), st.GetTerm())
	}
	t.Logf("majority placing under term %d %s after the partition", p.GetTerm(), time.Since(cutAt).Round(time.Millisecond))

	isolated := newClient(t, old.grpc)
	eventually(t, 10*time.Second, "the isolated leader to step down", func() bool {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		defer scancel()
		s, err := isolated.Status(sctx)
		return err == nil && s.GetRaftState() != "Leader"
	})
	pctx, pcancel := context.WithTimeout(ctx, time.Second)
	_, err = isolated.Place(pctx, &pb.PlaceRequest{RequestId: "isolated", Model: "m", PromptTokens: 64})
	pcancel()
	if !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("isolated node placed or failed oddly: %v", err)
	}

	lab.heal(oi)
	eventually(t, 15*time.Second, "the old leader to follow the new one", func() bool {
		sctx, scancel := context.WithTimeout(ctx, time.Second)
		defer scancel()
		s, err := isolated.Status(sctx)
		return err == nil && s.GetRaftState() == "Follower" && s.GetLeaderId() != "" && s.GetLeaderId() != old.id && s.GetTerm() >= p.GetTerm()
	})
}
