package fsm

import (
	"encoding/json"
	"fmt"
	"slices"
)

// CommandType is the first byte of every log entry.
type CommandType uint8

// IgnoreUnknownFlag set on a command type lets coordinators that do not know the command skip it
// instead of failing the entry. Use it only for commands whose absence leaves state consistent.
const IgnoreUnknownFlag CommandType = 0x80

// Command types. Values are persisted in the log: never renumber.
const (
	CmdRegisterNode CommandType = 1
	CmdSetNodeState CommandType = 2
	CmdRemoveNode   CommandType = 3
	CmdUpsertModel  CommandType = 4
	CmdRemoveModel  CommandType = 5
	CmdSetPolicy    CommandType = 6
)

// RegisterNode adds a node or refreshes its identity and inventory. A re-registering node keeps its
// state unless it was dead or drained: registering again is how a restarted worker comes back.
type RegisterNode struct {
	Node Node  `json:"node"`
	At   int64 `json:"at"`
}

// SetNodeState changes a node's state. From, when set, makes the change conditional: the leader
// proposes "dead -> active" only if the node is still dead when the entry applies, so a racing
// drain is never overwritten. FromSince narrows it to the stay in From that began at that time
// (Node.StateSince), so a decision taken about one drain cannot complete a later one.
type SetNodeState struct {
	ID        string    `json:"id"`
	State     NodeState `json:"state"`
	From      NodeState `json:"from,omitempty"`
	FromSince int64     `json:"from_since,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	At        int64     `json:"at"`
}

// ChangeFrom proposes moving a node to state `to` on condition that it is still in the stay the
// proposer saw (seen.State since seen.StateSince) when the entry applies.
func ChangeFrom(seen Node, to NodeState, reason string, at int64) SetNodeState {
	return SetNodeState{ID: seen.ID, State: to, From: seen.State, FromSince: seen.StateSince, Reason: reason, At: at}
}

// RemoveNode forgets a node.
type RemoveNode struct {
	ID string `json:"id"`
}

// UpsertModel adds or replaces a model.
type UpsertModel struct {
	Model Model `json:"model"`
}

// RemoveModel forgets a model.
type RemoveModel struct {
	ID string `json:"id"`
}

// SetPolicy replaces the placement policy.
type SetPolicy struct {
	Spec json.RawMessage `json:"spec"`
}

// Encode serialises a command for raft.Apply.
func Encode(t CommandType, payload any) ([]byte, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return nil, fmt.Errorf("fsm: encode command %d: %w", t, err)
	}
	return append([]byte{byte(t)}, b...), nil
}

// applyFunc changes st (a private clone) according to payload. It must be deterministic.
type applyFunc func(st *State, payload []byte) error

// commands is the dispatch table. It is a function, not a package variable, so no package-level
// mutable state exists; the table is built once per FSM.
func commands() map[CommandType]applyFunc {
	return map[CommandType]applyFunc{
		CmdRegisterNode: applyRegisterNode,
		CmdSetNodeState: applySetNodeState,
		CmdRemoveNode:   applyRemoveNode,
		CmdUpsertModel:  applyUpsertModel,
		CmdRemoveModel:  applyRemoveModel,
		CmdSetPolicy:    applySetPolicy,
	}
}

func decode(payload []byte, v any) error {
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("%w: %w", ErrDecode, err)
	}
	return nil
}

func applyRegisterNode(st *State, payload []byte) error {
	var c RegisterNode
	if err := decode(payload, &c); err != nil {
		return err
	}
	n := c.Node.clone()
	if err := validateNode(&n); err != nil {
		return err
	}
	old, ok := st.Nodes[n.ID]
	switch {
	case !ok:
		n.State, n.StateSince, n.RegisteredAt, n.StateReason = StateActive, c.At, c.At, "registered"
	case old.State == StateDead || old.State == StateDrained:
		n.State, n.StateSince, n.RegisteredAt, n.StateReason = StateActive, c.At, c.At, "re-registered"
	default:
		n.State, n.StateSince, n.RegisteredAt, n.StateReason = old.State, old.StateSince, old.RegisteredAt, old.StateReason
	}
	st.Nodes[n.ID] = n
	return nil
}

func applySetNodeState(st *State, payload []byte) error {
	var c SetNodeState
	if err := decode(payload, &c); err != nil {
		return err
	}
	if !c.State.Valid() {
		return fmt.Errorf("%w: unknown node state %q", ErrInvalid, c.State)
	}
	n, ok := st.Nodes[c.ID]
	if !ok {
		return fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	if c.From != "" && (n.State != c.From || c.FromSince != 0 && n.StateSince != c.FromSince) {
		return fmt.Errorf("%w: node %q is %s since %d", ErrStale, c.ID, n.State, n.StateSince)
	}
	if n.State == c.State {
		return nil
	}
	n.State, n.StateReason, n.StateSince = c.State, c.Reason, c.At
	st.Nodes[c.ID] = n
	return nil
}

func applyRemoveNode(st *State, payload []byte) error {
	var c RemoveNode
	if err := decode(payload, &c); err != nil {
		return err
	}
	if _, ok := st.Nodes[c.ID]; !ok {
		return fmt.Errorf("%w: node %q", ErrNotFound, c.ID)
	}
	delete(st.Nodes, c.ID)
	return nil
}

func applyUpsertModel(st *State, payload []byte) error {
	var c UpsertModel
	if err := decode(payload, &c); err != nil {
		return err
	}
	if c.Model.ID == "" || len(c.Model.ID) > 256 {
		return fmt.Errorf("%w: model id must be 1..256 bytes", ErrInvalid)
	}
	if c.Model.BlockTokens < 0 {
		return fmt.Errorf("%w: model %q: negative block size", ErrInvalid, c.Model.ID)
	}
	m := c.Model
	m.Pools = slices.Clone(m.Pools)
	st.Models[m.ID] = m
	return nil
}

func applyRemoveModel(st *State, payload []byte) error {
	var c RemoveModel
	if err := decode(payload, &c); err != nil {
		return err
	}
	if _, ok := st.Models[c.ID]; !ok {
		return fmt.Errorf("%w: model %q", ErrNotFound, c.ID)
	}
	delete(st.Models, c.ID)
	return nil
}

func applySetPolicy(st *State, payload []byte) error {
	var c SetPolicy
	if err := decode(payload, &c); err != nil {
		return err
	}
	if len(c.Spec) == 0 || !json.Valid(c.Spec) {
		return fmt.Errorf("%w: policy spec is not JSON", ErrInvalid)
	}
	st.Policy = Policy{Spec: slices.Clone([]byte(c.Spec)), Version: st.Index}
	return nil
}
