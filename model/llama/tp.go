package llama

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/comm"
	"github.com/tandemserve/tandem/kernels/quant"
)

// TP runs one model tensor-parallel across ranks, Megatron style: each rank
// owns Heads/N query heads and KVHeads/N KV heads (so the KV cache is sharded
// by KV head: rank r's cache holds heads [r*KVHeads/N, (r+1)*KVHeads/N)) and
// FF/N feed-forward columns. Q, K, V, gate and up are split by output rows
// (column-parallel); the attention output and down projections by input
// columns (row-parallel), followed by one all-reduce each. Embeddings, norms
// and the residual stream are replicated; rank 0 computes the logits.
type TP struct {
	cfg   Config
	ranks []*Model
	comms []comm.Communicator
}

// ErrTPShape reports a model that cannot be split evenly N ways.
var ErrTPShape = errors.New("llama: model cannot be split across tensor-parallel ranks")

// NewTP binds cfg's weights from src across backends (one rank each),
// connected by comms (comms[i] is rank i's communicator).
func NewTP(cfg Config, backends []kernels.Backend, comms []comm.Communicator, src TensorSource) (*TP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := len(backends)
	if n == 0 || len(comms) != n {
		return nil, fmt.Errorf("%w: %d backends, %d communicators", ErrTPShape, n, len(comms))
	}
	if cfg.Heads%n != 0 || cfg.KVHeads%n != 0 || cfg.FF%n != 0 {
		return nil, fmt.Errorf("%w: %d heads, %d KV heads and FF %d must divide by %d", ErrTPShape, cfg.Heads, cfg.KVHeads, cfg.FF, n)
	}
	shard := cfg
	shard.Heads, shard.KVHeads, shard.FF = cfg.Heads/n, cfg.KVHeads/n, cfg.FF/n
	tp := &TP{cfg: cfg, comms: comms}
	for r := 0; r < n; r++ {
		m, err := New(shard, backends[r], &shardSource{src: src, cfg: cfg, rank: r, n: n})
		if err != nil {
			return nil, fmt.Errorf("llama: rank %d: %w", r, err)
		}
		c := comms[r]
		m.allReduce = c.AllReduceSum
		tp.ranks = append(tp.ranks, m)
	}
	return tp, nil
}

// Config is the whole (unsharded) model's architecture.
func (tp *TP) Config() Config { return tp.cfg }

// Size is the number of ranks.
func (tp *TP) Size() int { return len(tp.ranks) }

// Rank returns rank r's shard; its Config describes the shard.
func (tp *TP) Rank(r int) *Model { return tp.ranks[r] }

// NewKVCache allocates a sharded cache of blocks blocks: each rank's shard
// on its backend, joined so that its blocks read and write as an unsharded
// cache's.
func (tp *TP) NewKVCache(blocks, blockSize int, dtype kernels.KVDType) (kernels.KVCache, error) {
	shards, err := tp.newShards(blocks, blockSize, dtype)
	if err != nil {
		return nil, err
	}
	return NewShardedKVCache(shards)
}

func (tp *TP) newShards(blocks, blockSize int, dtype kernels.KVDType) ([]kernels.KVCache, error) {
	caches := make([]kernels.KVCache, 0, len(tp.ranks))
	for _, m := range tp.ranks {
		c, err := m.be.NewKVCache(m.cfg.KVSpec(blocks, blockSize, dtype))
		if err != nil {
			for _, c := range caches {
				c.Close()
			}
			return nil, err
		}
		caches = append(caches, c)
	}
	return caches, nil
}

// Forward runs the batch on every rank at once over cache, which must come
// from NewKVCache. The ranks meet at each all-reduce; if one fails the
// context of the others is cancelled so none waits forever.
func (tp *TP) Forward(ctx context.Context, cache kernels.KVCache, b *Batch, onLayer func(layer int)) ([]float32, error) {
	sc, ok := cache.(*ShardedKVCache)
	if !ok {
		return nil, fmt.Errorf("%w: a tensor-parallel model needs its sharded KV cache", ErrInvalidBatch)
	}
	caches := sc.Shards()
	if len(caches) != len(tp.ranks) {
		return nil, fmt.Errorf("%w: %d cache shards for %d ranks", ErrInvalidBatch, len(caches), len(tp.ranks))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	followers := *b
	followers.LogitRows = nil
	errs := make([]error, len(tp.ranks))
	var wg sync.WaitGroup
	for r := 1; r < len(tp.ranks); r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := tp.ranks[r].Forward(ctx, caches[r], &followers, nil); err != nil {
				errs[r] = err
				cancel()
			}
		}()
	}
	logits, err := tp.ranks[0].Forward(ctx, caches[0], b, onLayer)
	if err != nil {
		errs[0] = err
		cancel()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return logits, nil
}

// shardSource serves rank's slice of each tensor.
type shardSource struct {
	src     TensorSource
	cfg     Config
	rank, n int
}

func (s *shardSource) LookupTensor(name string) (quant.Type, []uint64, []byte, bool) {
	t, dims, data, ok := s.src.LookupTensor(name)
	if !ok || len(dims) != 2 {
		return t, dims, data, ok
	}
	var suffix string
	if i := lastDot(name, 1); i >= 0 {
		suffix = name[i+1:]
	}
	switch suffix {
	case "attn_q.weight", "attn_k.weight", "attn_v.weight", "ffn_gate.weight", "ffn_up.weight":
		return t, rowShard(dims, s.rank, s.n), rowSlice(t, dims, data, s.rank, s.n), true
	case "attn_output.weight", "ffn_down.weight":
		d, cols, ok := colSlice(t, dims, data, s.rank, s.n)
		if !ok {
			// A shard boundary inside a quant block cannot be expressed;
			// New then fails on the shape mismatch with a clear message.
			return t, dims, data, true
		}
		return t, d, cols, true
	}
	return t, dims, data, true
}

// lastDot finds the dot before the last k dot-separated parts of name.
func lastDot(name string, k int) int {
	seen := 0
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '.' {
			seen++
			if seen == k+1 {
				return i
			}
		}
	}
	return -1
}

func rowShard(dims []uint64, r, n int) []uint64 {
	return []uint64{dims[0], dims[1] / uint64(n)}
}

// rowSlice returns rank r's contiguous block of rows (no copy).
func rowSlice(t quant.Type, dims []uint64, data []byte, r, n int) []byte {
	rb := t.RowBytes(int(dims[0]))
	rows := int(dims[1]) / n
	return data[r*rows*rb : (r+1)*rows*rb]
}

// colSlice copies rank r's range of columns out of every row.
func colSlice(t quant.Type, dims []uint64, data []byte, r, n int) ([]uint64, []byte, bool) {
	cols, rows := int(dims[0]), int(dims[1])
	part := cols / n
	if part%t.BlockSize() != 0 {
		return nil, nil, false
	}
	rb, pb := t.RowBytes(cols), t.RowBytes(part)
	out := make([]byte, 0, rows*pb)
	for i := 0; i < rows; i++ {
		row := data[i*rb : (i+1)*rb]
		out = append(out, row[r*pb:(r+1)*pb]...)
	}
	return []uint64{uint64(part), uint64(rows)}, out, true
}
