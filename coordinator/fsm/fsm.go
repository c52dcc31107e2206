package fsm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// FSM implements raft.FSM. Apply, Snapshot and Restore are called by raft from one goroutine;
// State may be called from any goroutine at any time.
type FSM struct {
	state    atomic.Pointer[State]
	table    map[CommandType]applyFunc
	log      *slog.Logger
	onChange func(*State)
}

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.FSMSnapshot = (*snapshot)(nil)
)

// New returns an empty FSM. onChange, if not nil, is called after every applied change with the new
// state; it runs on raft's apply goroutine and must not block.
func New(log *slog.Logger, onChange func(*State)) *FSM {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &FSM{table: commands(), log: log, onChange: onChange}
	f.state.Store(newState())
	return f
}

// State returns the current state. The caller must not modify it.
func (f *FSM) State() *State { return f.state.Load() }

// Apply applies one committed log entry. The returned value is nil or an error.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	return f.apply(l.Index, l.Data)
}

func (f *FSM) apply(index uint64, data []byte) error {
	if len(data) == 0 {
		f.skip(index)
		return fmt.Errorf("%w: empty entry at index %d", ErrDecode, index)
	}
	t := CommandType(data[0])
	fn, ok := f.table[t&^IgnoreUnknownFlag]
	if !ok {
		f.skip(index)
		if t&IgnoreUnknownFlag != 0 {
			f.log.Warn("skipping unknown optional command", "type", uint8(t), "index", index)
			return nil
		}
		return fmt.Errorf("%w: %d at index %d", ErrUnknownCommand, uint8(t), index)
	}
	next := f.state.Load().clone()
	next.Index = index
	if err := fn(next, data[1:]); err != nil {
		// The entry is committed either way; a refused command leaves state unchanged on every
		// node, which is what keeps replicas identical.
		f.skip(index)
		return err
	}
	f.state.Store(next)
	if f.onChange != nil {
		f.onChange(next)
	}
	return nil
}

// skip records that index was applied without changing state.
func (f *FSM) skip(index uint64) {
	cur := f.state.Load().clone()
	cur.Index = index
	f.state.Store(cur)
}

// Snapshot captures the current state. It is cheap: the state is immutable, so the pointer is the
// snapshot; Persist does the I/O.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{st: f.state.Load()}, nil
}

// Restore replaces the state with a snapshot written by Persist. The new state is built completely
// before it is swapped in, so a bad snapshot leaves the old state in place.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := ReadSnapshot(rc)
	if err != nil {
		return err
	}
	f.state.Store(st)
	if f.onChange != nil {
		f.onChange(st)
	}
	return nil
}

// snapshotVersion is the first record of every snapshot.
const snapshotVersion = 1

type snapHeader struct {
	Version int    `json:"version"`
	Index   uint64 `json:"index"`
}

// snapRecord is one line of a snapshot after the header. Exactly one field is set.
type snapRecord struct {
	Node   *Node   `json:"node,omitempty"`
	Model  *Model  `json:"model,omitempty"`
	Policy *Policy `json:"policy,omitempty"`
}

type snapshot struct{ st *State }

// Persist streams the state as JSON lines: a header, then one record per node and model, then the
// policy. Streaming keeps memory flat for large clusters.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := WriteSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *snapshot) Release() {}

// WriteSnapshot writes st in the snapshot format.
func WriteSnapshot(w io.Writer, st *State) error {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(snapHeader{Version: snapshotVersion, Index: st.Index}); err != nil {
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	for _, n := range st.SortedNodes() {
		if err := enc.Encode(snapRecord{Node: &n}); err != nil {
			return fmt.Errorf("fsm: write snapshot: %w", err)
		}
	}
	for _, m := range st.SortedModels() {
		if err := enc.Encode(snapRecord{Model: &m}); err != nil {
			return fmt.Errorf("fsm: write snapshot: %w", err)
		}
	}
	p := st.Policy
	if err := enc.Encode(snapRecord{Policy: &p}); err != nil {
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	return nil
}

// maxSnapshotLine bounds one record so a corrupt snapshot cannot make Restore allocate without limit.
const maxSnapshotLine = 1 << 20

// ReadSnapshot parses a snapshot written by WriteSnapshot, validating every record.
func ReadSnapshot(r io.Reader) (*State, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), maxSnapshotLine)
	if !sc.Scan() {
		if err := sc.Err(); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
		}
		return nil, fmt.Errorf("%w: empty", ErrSnapshot)
	}
	var h snapHeader
	if err := json.Unmarshal(sc.Bytes(), &h); err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrSnapshot, err)
	}
	if h.Version != snapshotVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrSnapshot, h.Version)
	}
	st := newState()
	st.Index = h.Index
	for line := 2; sc.Scan(); line++ {
		var rec snapRecord
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrSnapshot, line, err)
		}
		switch {
		case rec.Node != nil:
			if err := validateNode(rec.Node); err != nil {
				return nil, fmt.Errorf("%w: line %d: %w", ErrSnapshot, line, err)
			}
			if !rec.Node.State.Valid() {
				return nil, fmt.Errorf("%w: line %d: node state %q", ErrSnapshot, line, rec.Node.State)
			}
			st.Nodes[rec.Node.ID] = *rec.Node
		case rec.Model != nil:
			if rec.Model.ID == "" {
				return nil, fmt.Errorf("%w: line %d: empty model id", ErrSnapshot, line)
			}
			st.Models[rec.Model.ID] = *rec.Model
		case rec.Policy != nil:
			st.Policy = *rec.Policy
		default:
			return nil, fmt.Errorf("%w: line %d: empty record", ErrSnapshot, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return st, nil
}
