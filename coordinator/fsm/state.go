// Package fsm is the coordinator's replicated state machine.
//
// Every change to cluster state is a typed command: one type byte followed by a JSON payload,
// appended to the Raft log by the leader and applied in log order on every coordinator. Apply
// dispatches on the type byte from a table, is deterministic (it reads nothing but the command and
// the previous state; timestamps travel inside the command), and refuses entries it cannot decode.
// A type byte with the high bit set marks a command that older coordinators may skip when they do
// not know it, so new optional commands can roll out before every node is upgraded.
//
// State is copy-on-write: Apply clones the current *State, changes the clone and publishes it with an
// atomic pointer swap. Readers (the placement loop runs thousands of times per second) take the
// pointer without locking and must treat what they get as immutable.
//
// Per-request data (placements, load) is deliberately absent: it changes far faster than a
// replicated log should be written, and losing it on failover costs nothing that the workers do not
// report again within one load interval.
package fsm

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Sentinel errors. Apply returns them (wrapped) as the log entry's response.
var (
	ErrUnknownCommand = errors.New("fsm: unknown command type")
	ErrDecode         = errors.New("fsm: cannot decode command")
	ErrInvalid        = errors.New("fsm: invalid command")
	ErrNotFound       = errors.New("fsm: not found")
	ErrSnapshot       = errors.New("fsm: bad snapshot")
	// ErrStale answers a conditional change whose condition no longer held when it applied:
	// state already moved on, nothing changed, and the proposer decides whether to try again.
	ErrStale = errors.New("fsm: state moved on since the change was proposed")
)

// Role is what a node does in the cluster.
type Role string

// Roles.
const (
	RolePrefill     Role = "prefill"
	RoleDecode      Role = "decode"
	RoleGateway     Role = "gateway"
	RoleCoordinator Role = "coordinator"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	switch r {
	case RolePrefill, RoleDecode, RoleGateway, RoleCoordinator:
		return true
	}
	return false
}

// NodeState is a node's placement eligibility.
type NodeState string

// Node states. Only active nodes receive new placements. A draining node finishes in-flight work
// and then becomes drained; dead is recorded by the leader when gossip loses the node.
const (
	StateActive   NodeState = "active"
	StateDraining NodeState = "draining"
	StateDrained  NodeState = "drained"
	StateDead     NodeState = "dead"
)

// Valid reports whether s is a known state.
func (s NodeState) Valid() bool {
	switch s {
	case StateActive, StateDraining, StateDrained, StateDead:
		return true
	}
	return false
}

// Device is one accelerator or CPU a worker computes on.
type Device struct {
	Kind        string `json:"kind"` // "cpu", "cuda"
	Name        string `json:"name"`
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
}

// Node is one registered process.
type Node struct {
	ID            string    `json:"id"`
	Role          Role      `json:"role"`
	GRPCAddr      string    `json:"grpc_addr"`
	TransportAddr string    `json:"transport_addr,omitempty"` // KV-block transport, workers only
	RaftAddr      string    `json:"raft_addr,omitempty"`      // coordinators only
	Version       string    `json:"version,omitempty"`
	Pool          string    `json:"pool,omitempty"`
	Models        []string  `json:"models,omitempty"`
	Backend       string    `json:"backend,omitempty"`
	Devices       []Device  `json:"devices,omitempty"`
	TPDegree      int       `json:"tp_degree,omitempty"`
	State         NodeState `json:"state"`
	StateReason   string    `json:"state_reason,omitempty"`
	StateSince    int64     `json:"state_since"` // unix nanoseconds, from the command
	RegisteredAt  int64     `json:"registered_at"`
}

// Serves reports whether the node has model loaded. An empty model list means "any model in the
// node's pool", which is how single-model deployments stay configuration-free.
func (n *Node) Serves(model string) bool {
	return len(n.Models) == 0 || slices.Contains(n.Models, model)
}

func (n Node) clone() Node {
	n.Models = slices.Clone(n.Models)
	n.Devices = slices.Clone(n.Devices)
	return n
}

// Model is a model the cluster serves and the worker pools allowed to serve it.
type Model struct {
	ID          string   `json:"id"`
	Pools       []string `json:"pools,omitempty"` // empty: every pool
	BlockTokens int      `json:"block_tokens,omitempty"`
}

// InPool reports whether a node in pool may serve the model.
func (m *Model) InPool(pool string) bool {
	return len(m.Pools) == 0 || slices.Contains(m.Pools, pool)
}

// Policy is the placement policy configuration. Spec is the JSON the placement package builds a
// pipeline from; the FSM stores it verbatim (the leader validates it before proposing) so the FSM
// does not depend on the set of placement plugins compiled into a given binary.
type Policy struct {
	Spec    []byte `json:"spec,omitempty"`
	Version uint64 `json:"version"` // log index that set it
}

// State is one immutable version of the replicated state.
type State struct {
	Nodes  map[string]Node  `json:"nodes"`
	Models map[string]Model `json:"models"`
	Policy Policy           `json:"policy"`
	Index  uint64           `json:"index"` // last applied log index
}

func newState() *State {
	return &State{Nodes: map[string]Node{}, Models: map[string]Model{}}
}

func (s *State) clone() *State {
	c := &State{
		Nodes:  make(map[string]Node, len(s.Nodes)),
		Models: make(map[string]Model, len(s.Models)),
		Policy: Policy{Spec: slices.Clone(s.Policy.Spec), Version: s.Policy.Version},
		Index:  s.Index,
	}
	for k, v := range s.Nodes {
		c.Nodes[k] = v.clone()
	}
	for k, v := range s.Models {
		v.Pools = slices.Clone(v.Pools)
		c.Models[k] = v
	}
	return c
}

// SortedNodes returns the nodes ordered by id, for stable output.
func (s *State) SortedNodes() []Node {
	out := make([]Node, 0, len(s.Nodes))
	for _, n := range s.Nodes {
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// SortedModels returns the models ordered by id.
func (s *State) SortedModels() []Model {
	out := make([]Model, 0, len(s.Models))
	for _, m := range s.Models {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func validateNode(n *Node) error {
	if n.ID == "" || len(n.ID) > 128 {
		return fmt.Errorf("%w: node id must be 1..128 bytes", ErrInvalid)
	}
	if !n.Role.Valid() {
		return fmt.Errorf("%w: node %q: unknown role %q", ErrInvalid, n.ID, n.Role)
	}
	if n.GRPCAddr == "" {
		return fmt.Errorf("%w: node %q: empty grpc address", ErrInvalid, n.ID)
	}
	if n.TPDegree < 0 {
		return fmt.Errorf("%w: node %q: negative tp degree", ErrInvalid, n.ID)
	}
	return nil
}
