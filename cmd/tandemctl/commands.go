package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/tandemserve/tandem/coordinator/client"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// env is what a command needs.
type env struct {
	g      *global
	cl     *client.Client
	stdin  io.Reader
	out    io.Writer
	errOut io.Writer
}

type command func(ctx context.Context, e *env, args []string) error

func commands() map[string]command {
	return map[string]command{
		"help":     nil,
		"status":   cmdStatus,
		"nodes":    cmdNodes,
		"drain":    cmdDrain(true),
		"undrain":  cmdDrain(false),
		"peers":    cmdPeers,
		"models":   cmdModels,
		"policy":   cmdPolicy,
		"snapshot": cmdSnapshot,
	}
}

// printJSON writes a protobuf message as indented JSON with stable field names.
func (e *env) printJSON(m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(e.out, string(b))
	return err
}

func usageErr(e *env, format string, a ...any) error {
	fmt.Fprintf(e.errOut, "tandemctl: "+format+"\n\n%s", append(a, usage)...)
	return errUsage
}

func cmdStatus(ctx context.Context, e *env, args []string) error {
	if len(args) != 0 {
		return usageErr(e, "status takes no arguments")
	}
	st, err := e.cl.Status(ctx)
	if err != nil {
		return err
	}
	if e.g.json {
		return e.printJSON(st)
	}
	leader := st.GetLeaderId()
	if leader == "" {
		leader = "(none)"
	}
	fmt.Fprintf(e.out, "leader:        %s\nterm:          %d\ncommit index:  %d\napplied index: %d\nanswered by:   %s (%s)\n\n",
		leader, st.GetTerm(), st.GetCommitIndex(), st.GetAppliedIndex(), st.GetAnsweredBy(), st.GetRaftState())
	t := newTable(e.out, "ID", "ROLE", "HEALTH", "RAFT", "GRPC")
	for _, s := range st.GetServers() {
		role := "voter"
		if !s.GetVoter() {
			role = "nonvoter"
		}
		if s.GetLeader() {
			role += ",leader"
		}
		t.row(s.GetId(), role, s.GetHealth(), s.GetRaftAddr(), s.GetGrpcAddr())
	}
	return t.flush()
}

func cmdNodes(ctx context.Context, e *env, args []string) error {
	fs := flag.NewFlagSet("nodes", flag.ContinueOnError)
	fs.SetOutput(e.errOut)
	role := fs.String("role", "", "only nodes of this role")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		return usageErr(e, "usage: nodes [--role ROLE]")
	}
	resp, err := e.cl.Nodes(ctx, *role)
	if err != nil {
		return err
	}
	if e.g.json {
		return e.printJSON(resp)
	}
	t := newTable(e.out, "ID", "ROLE", "STATE", "QUEUE", "RUNNING", "KV FREE", "TOK/S", "LOAD AGE", "DEVICE", "ADDR")
	for _, n := range resp.GetNodes() {
		in := n.GetInfo()
		queue, running, kv, tps, age := "-", "-", "-", "-", "-"
		if l := n.GetLoad(); l != nil {
			queue = fmt.Sprint(l.GetQueueDepth() + l.GetWaiting())
			running = fmt.Sprint(l.GetRunning())
			kv = fmt.Sprintf("%d/%d", l.GetFreeKvBlocks(), l.GetTotalKvBlocks())
			tps = fmt.Sprintf("%.0f", l.GetTokensPerSec())
			age = fmt.Sprintf("%dms", n.GetLoadAgeMs())
		}
		var devs []string
		for _, d := range in.GetDevices() {
			devs = append(devs, d.GetKind()+":"+d.GetName())
		}
		dev := strings.Join(devs, ",")
		if in.GetTpDegree() > 1 {
			dev += fmt.Sprintf(" tp=%d", in.GetTpDegree())
		}
		if dev == "" {
			dev = "-"
		}
		t.row(in.GetId(), in.GetRole(), n.GetState(), queue, running, kv, tps, age, dev, in.GetGrpcAddr())
	}
	return t.flush()
}

func cmdDrain(drain bool) command {
	return func(ctx context.Context, e *env, args []string) error {
		if len(args) != 1 {
			return usageErr(e, "usage: drain|undrain NODE")
		}
		var (
			ns  *pb.NodeStatus
			err error
		)
		if drain {
			ns, err = e.cl.Drain(ctx, args[0])
		} else {
			ns, err = e.cl.Undrain(ctx, args[0])
		}
		if err != nil {
			return err
		}
		if e.g.json {
			return e.printJSON(ns)
		}
		fmt.Fprintf(e.out, "%s: %s\n", ns.GetInfo().GetId(), ns.GetState())
		return nil
	}
}

func cmdPeers(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageErr(e, "usage: peers add ID RAFT GRPC [--nonvoter] | peers remove ID")
	}
	switch args[0] {
	case "add":
		fs := flag.NewFlagSet("peers add", flag.ContinueOnError)
		fs.SetOutput(e.errOut)
		nonvoter := fs.Bool("nonvoter", false, "add as a non-voting member")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil || len(pos) != 3 {
			return usageErr(e, "usage: peers add ID RAFT GRPC [--nonvoter]")
		}
		resp, err := e.cl.AddPeer(ctx, &pb.AddPeerRequest{Id: pos[0], RaftAddr: pos[1], GrpcAddr: pos[2], Nonvoter: *nonvoter})
		if err != nil {
			return err
		}
		if e.g.json {
			return e.printJSON(resp)
		}
		fmt.Fprintf(e.out, "added %s; gossip seeds: %s\n", pos[0], strings.Join(resp.GetGossipSeeds(), ","))
		return nil
	case "remove":
		if len(args) != 2 {
			return usageErr(e, "usage: peers remove ID")
		}
		if err := e.cl.RemovePeer(ctx, args[1]); err != nil {
			return err
		}
		if e.g.json {
			return json.NewEncoder(e.out).Encode(map[string]string{"removed": args[1]})
		}
		fmt.Fprintf(e.out, "removed %s\n", args[1])
		return nil
	}
	return usageErr(e, "unknown peers subcommand %q", args[0])
}

// parseInterleaved lets flags follow positional arguments ("peers add a b c --nonvoter").
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func cmdModels(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "list" {
		resp, err := e.cl.Models(ctx)
		if err != nil {
			return err
		}
		if e.g.json {
			return e.printJSON(resp)
		}
		t := newTable(e.out, "MODEL", "POOLS", "BLOCK", "PREFILL", "DECODE")
		for _, m := range resp.GetModels() {
			pools := strings.Join(m.GetModel().GetPools(), ",")
			if pools == "" {
				pools = "*"
			}
			t.row(m.GetModel().GetId(), pools, fmt.Sprint(m.GetModel().GetBlockTokens()),
				orDash(strings.Join(m.GetPrefillNodes(), ",")), orDash(strings.Join(m.GetDecodeNodes(), ",")))
		}
		return t.flush()
	}
	switch args[0] {
	case "set":
		fs := flag.NewFlagSet("models set", flag.ContinueOnError)
		fs.SetOutput(e.errOut)
		pools := fs.String("pools", "", "comma-separated pools allowed to serve the model (default: all)")
		block := fs.Int("block-tokens", 0, "tokens per KV block")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil || len(pos) != 1 {
			return usageErr(e, "usage: models set ID [--pools a,b] [--block-tokens N]")
		}
		m := &pb.Model{Id: pos[0], BlockTokens: int32(*block)}
		if *pools != "" {
			m.Pools = strings.Split(*pools, ",")
		}
		if err := e.cl.SetModel(ctx, m); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "model %s set\n", pos[0])
		return nil
	case "remove":
		if len(args) != 2 {
			return usageErr(e, "usage: models remove ID")
		}
		if err := e.cl.RemoveModel(ctx, args[1]); err != nil {
			return err
		}
		fmt.Fprintf(e.out, "model %s removed\n", args[1])
		return nil
	}
	return usageErr(e, "unknown models subcommand %q", args[0])
}

func cmdPolicy(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 {
		return usageErr(e, "usage: policy get | policy set FILE")
	}
	switch args[0] {
	case "get":
		p, err := e.cl.Policy(ctx)
		if err != nil {
			return err
		}
		return printPolicy(e, p)
	case "set":
		if len(args) != 2 {
			return usageErr(e, "usage: policy set FILE (- for stdin)")
		}
		var (
			b   []byte
			err error
		)
		if args[1] == "-" {
			b, err = io.ReadAll(io.LimitReader(e.stdin, 1<<20))
		} else {
			b, err = os.ReadFile(args[1])
		}
		if err != nil {
			return fmt.Errorf("reading policy: %w", err)
		}
		p, err := e.cl.SetPolicy(ctx, string(b))
		if err != nil {
			return err
		}
		return printPolicy(e, p)
	}
	return usageErr(e, "unknown policy subcommand %q", args[0])
}

func printPolicy(e *env, p *pb.PolicyResponse) error {
	if e.g.json {
		return e.printJSON(p)
	}
	var v any
	if err := json.Unmarshal([]byte(p.GetSpecJson()), &v); err != nil {
		return fmt.Errorf("policy from coordinator is not JSON: %w", err)
	}
	b, _ := json.MarshalIndent(v, "", "  ")
	fmt.Fprintf(e.out, "# version %d\n%s\n", p.GetVersion(), b)
	return nil
}

func cmdSnapshot(ctx context.Context, e *env, args []string) error {
	if len(args) != 1 || args[0] != "save" {
		return usageErr(e, "usage: snapshot save")
	}
	s, err := e.cl.SnapshotSave(ctx)
	if err != nil {
		return err
	}
	if e.g.json {
		return e.printJSON(s)
	}
	fmt.Fprintf(e.out, "snapshot %s at index %d, term %d\n", s.GetId(), s.GetIndex(), s.GetTerm())
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
