package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/tandemserve/tandem/coordinator/fsm"
	"github.com/tandemserve/tandem/coordinator/placement"
	"github.com/tandemserve/tandem/coordinator/token"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// defaultBlockTokens is used when neither the model nor the request says how many tokens a KV
// block holds.
const defaultBlockTokens = 16

// maxBlockHashes bounds a request's hash chain (a 1M-token prompt at 16 tokens per block).
const maxBlockHashes = 65536

// Place chooses workers for one request. Leader only; it writes nothing to the Raft log.
func (s *Server) Place(ctx context.Context, req *pb.PlaceRequest) (*pb.Placement, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	key := ""
	if req.GetRequestId() != "" {
		key = "place:" + req.GetRequestId()
	}
	p, err := s.place(key, req.GetRequestId(), &placement.Request{
		Model:        req.GetModel(),
		PromptTokens: int(req.GetPromptTokens()),
		BlockHashes:  req.GetBlockHashes(),
		BlockTokens:  int(req.GetBlockTokens()),
		MaxTokens:    int(req.GetMaxTokens()),
		Priority:     int(req.GetPriority()),
		Exclude:      req.GetExclude(),
	})
	s.observe("place", start, err)
	return p, err
}

// ReportFailure re-places a request whose placement named a worker that failed before doing its
// part. The failed worker is skipped for SuspectTTL (or until it reports load again).
func (s *Server) ReportFailure(ctx context.Context, req *pb.ReportFailureRequest) (*pb.Placement, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	old := req.GetPlacement()
	if err := s.verifyPlacement(old); err != nil {
		return nil, err
	}
	failed := req.GetFailedNode()
	if failed != old.GetDecode().GetNodeId() && failed != old.GetPrefill().GetNodeId() {
		return nil, fmt.Errorf("%w: node %q is not part of placement %s", ErrInvalid, failed, old.GetTransferId())
	}
	s.loads.suspect(failed, s.cfg.SuspectTTL)
	p, err := s.place("failure:"+old.GetTransferId(), old.GetRequestId(), &placement.Request{
		Model:        old.GetModel(),
		PromptTokens: int(old.GetPromptTokens()),
		MaxTokens:    int(old.GetMaxTokens()),
		Exclude:      []string{failed},
	})
	s.observe("failure", start, err)
	return p, err
}

// Resume places the rest of a request whose decode worker died mid-generation: the new decode
// worker receives prompt plus the tokens generated so far as its prompt and generates the rest.
// The dead worker is excluded; prefix caching makes the re-prefill of the old prompt cheap.
func (s *Server) Resume(ctx context.Context, req *pb.ResumeRequest) (*pb.Placement, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	start := time.Now()
	old := req.GetPlacement()
	if err := s.verifyPlacement(old); err != nil {
		return nil, err
	}
	gen := int(req.GetGeneratedTokens())
	if gen < 0 {
		return nil, fmt.Errorf("%w: negative generated tokens", ErrInvalid)
	}
	remaining := int(old.GetMaxTokens()) - gen
	if old.GetMaxTokens() > 0 && remaining <= 0 {
		return nil, ErrNothingToDo
	}
	if old.GetMaxTokens() == 0 {
		remaining = 0
	}
	failed := req.GetFailedNode()
	if failed == "" {
		failed = old.GetDecode().GetNodeId()
	}
	s.loads.suspect(failed, s.cfg.SuspectTTL)
	p, err := s.place("resume:"+old.GetTransferId(), old.GetRequestId(), &placement.Request{
		Model:        old.GetModel(),
		PromptTokens: int(old.GetPromptTokens()) + gen,
		BlockHashes:  req.GetBlockHashes(),
		MaxTokens:    remaining,
		Exclude:      []string{failed},
	})
	s.observe("resume", start, err)
	return p, err
}

func (s *Server) observe(kind string, start time.Time, err error) {
	s.metrics.placeDuration.WithLabelValues(kind).Observe(time.Since(start).Seconds())
	result := "ok"
	switch {
	case errors.Is(err, placement.ErrNoCapacity):
		result = "no_capacity"
	case err != nil:
		result = "error"
	}
	s.metrics.placements.WithLabelValues(kind, result).Inc()
}

// verifyPlacement checks that p was signed by this cluster, so clients cannot use
// ReportFailure/Resume to obtain placements for requests they never placed.
func (s *Server) verifyPlacement(p *pb.Placement) error {
	if p == nil || p.GetDecode().GetNodeId() == "" {
		return fmt.Errorf("%w: missing placement", ErrInvalid)
	}
	c := token.Claims{
		TransferID: p.GetTransferId(), Term: p.GetTerm(), DecodeNode: p.GetDecode().GetNodeId(),
		Expiry: time.Unix(0, p.GetDeadlineUnixNano()),
	}
	// Expiry is checked against the token's own deadline only loosely: a resume may come after
	// the original transfer window, which is fine because the new placement gets a new token.
	if err := token.VerifyTransferToken(s.cfg.ClusterSecret, p.GetTransferToken(), c, 0, c.Expiry.Add(-time.Nanosecond)); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPlacement, err)
	}
	return nil
}

func (s *Server) place(key, requestID string, r *placement.Request) (*pb.Placement, error) {
	term := s.leaderTerm.Load()
	if term == 0 {
		return nil, ErrNotLeader
	}
	if key != "" {
		if p, ok := s.cache.get(key); ok {
			return p, nil
		}
	}
	// Validate before normalising: the truncation below assumes a positive prompt length.
	if err := r.Validate(); err != nil {
		return nil, err
	}
	if len(r.BlockHashes) > maxBlockHashes {
		return nil, fmt.Errorf("%w: %d block hashes (max %d)", placement.ErrInvalidRequest, len(r.BlockHashes), maxBlockHashes)
	}
	st := s.fsm.State()
	model, ok := st.Models[r.Model]
	if !ok && !anyNodeListsModel(st, r.Model) {
		return nil, fmt.Errorf("%w: %q", ErrUnknownModel, r.Model)
	}
	if r.BlockTokens == 0 {
		r.BlockTokens = model.BlockTokens
	}
	if r.BlockTokens == 0 {
		r.BlockTokens = defaultBlockTokens
	}
	if len(r.BlockHashes)*r.BlockTokens > r.PromptTokens {
		// Hashes beyond the prompt cannot be right; keep the prefix that fits rather than fail.
		r.BlockHashes = r.BlockHashes[:r.PromptTokens/r.BlockTokens]
	}
	buf := s.candBufs.Get().(*candidateBuf)
	prefill, decode := s.candidates(st, &model, ok, r, buf.prefill[:0], buf.decode[:0])
	res, err := s.pipeline.Load().Place(r, prefill, decode)
	// Result holds copies, so the candidate slices can be reused by the next placement.
	buf.prefill, buf.decode = prefill[:0], decode[:0]
	s.candBufs.Put(buf)
	if err != nil {
		return nil, err
	}
	now := s.clock.Now()
	deadline := now.Add(s.cfg.TransferTTL)
	tid, err := newTransferID()
	if err != nil {
		return nil, err
	}
	tok, err := token.Sign(s.cfg.ClusterSecret, token.Claims{TransferID: tid, Term: term, DecodeNode: res.Decode.ID, Expiry: deadline})
	if err != nil {
		return nil, err
	}
	out := &pb.Placement{
		RequestId:        requestID,
		Colocated:        res.Prefill == nil,
		Decode:           endpoint(&res.Decode),
		TransferId:       tid,
		TransferToken:    tok,
		Term:             term,
		DeadlineUnixNano: deadline.UnixNano(),
		Model:            r.Model,
		PromptTokens:     int32(r.PromptTokens),
		MaxTokens:        int32(r.MaxTokens),
	}
	blocks := (r.PromptTokens + r.MaxTokens + r.BlockTokens - 1) / r.BlockTokens
	if res.Prefill != nil {
		out.Prefill = endpoint(res.Prefill)
		s.loads.charge(res.Prefill.ID, 0)
	}
	s.loads.charge(res.Decode.ID, blocks)
	if key != "" {
		out = s.cache.put(key, out)
	}
	return out, nil
}

func endpoint(c *placement.Candidate) *pb.Endpoint {
	return &pb.Endpoint{NodeId: c.ID, GrpcAddr: c.GRPCAddr, TransportAddr: c.TransportAddr}
}

func anyNodeListsModel(st *fsm.State, model string) bool {
	for _, n := range st.Nodes {
		if slices.Contains(n.Models, model) {
			return true
		}
	}
	return false
}

// candidates lists the workers that may take r. Safety rules live here, not in plugins, so no
// policy can place on a dead, draining or excluded worker: only active nodes of the right role,
// serving the model in an allowed pool, with fresh load and not suspected, become candidates.
func (s *Server) candidates(st *fsm.State, model *fsm.Model, registered bool, r *placement.Request, prefill, decode []placement.Candidate) ([]placement.Candidate, []placement.Candidate) {
	for _, n := range s.workersOf(st) {
		if n.State != fsm.StateActive || r.Excluded(n.ID) || !n.Serves(r.Model) {
			continue
		}
		if registered && !model.InPool(n.Pool) {
			continue
		}
		var role placement.Role
		switch n.Role {
		case fsm.RolePrefill:
			role = placement.RolePrefill
		case fsm.RoleDecode:
			role = placement.RoleDecode
		default:
			continue
		}
		c := placement.Candidate{ID: n.ID, Role: role, GRPCAddr: n.GRPCAddr, TransportAddr: n.TransportAddr}
		if !s.loads.candidate(n.ID, &c) {
			continue
		}
		if role == placement.RolePrefill {
			prefill = append(prefill, c)
		} else {
			decode = append(decode, c)
		}
	}
	return prefill, decode
}

// candidateBuf holds reusable candidate slices: at thousands of placements per second, building
// fresh slices per request was most of the placement path's allocation.
type candidateBuf struct {
	prefill, decode []placement.Candidate
}

// workerIndex is the active prefill and decode workers of one State, sorted by id. Placement
// runs thousands of times per second against a State that changes a few times per minute, so the
// sorted list is built once per State rather than per request.
type workerIndex struct {
	st      *fsm.State
	workers []fsm.Node
}

func (s *Server) workersOf(st *fsm.State) []fsm.Node {
	if idx := s.index.Load(); idx != nil && idx.st == st {
		return idx.workers
	}
	idx := &workerIndex{st: st}
	for _, n := range st.SortedNodes() {
		if n.Role == fsm.RolePrefill || n.Role == fsm.RoleDecode {
			idx.workers = append(idx.workers, n)
		}
	}
	// Concurrent rebuilds for the same State produce equal lists; last store wins harmlessly.
	s.index.Store(idx)
	return idx.workers
}

func newTransferID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("coordinator: transfer id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}
