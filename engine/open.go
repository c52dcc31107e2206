package engine

import (
	"fmt"

	"github.com/tandemserve/tandem/engine/kvcache"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model/llama"
)

// CacheOptions size the KV cache Open allocates: Bytes when positive, else
// Fraction of the memory the system reports available (the
// --kv-cache-bytes / --kv-cache-fraction flags).
type CacheOptions struct {
	Bytes     int64
	Fraction  float64
	BlockSize int
	DType     kernels.KVDType
}

// DefaultCacheOptions uses a quarter of available memory in f16 blocks of
// kvcache.DefaultBlockSize tokens.
func DefaultCacheOptions() CacheOptions {
	return CacheOptions{Fraction: 0.25, BlockSize: kvcache.DefaultBlockSize, DType: kernels.KVF16}
}

// Open sizes a KV cache for m from co on m's backend and returns an engine
// over it, not yet started. The engine owns that cache and closes it in
// Close. cfg.Vocab and cfg.Scheduler.MaxSeqLen default to the model's
// vocabulary and context length when zero.
func Open(cfg Config, m *llama.Model, co CacheOptions) (*Engine, error) {
	mc := m.Config()
	if cfg.Vocab == 0 {
		cfg.Vocab = mc.Vocab
	}
	if cfg.Scheduler.MaxSeqLen == 0 || cfg.Scheduler.MaxSeqLen > mc.ContextLength {
		cfg.Scheduler.MaxSeqLen = mc.ContextLength
	}
	budget := co.Bytes
	if budget <= 0 {
		var err error
		if budget, err = kvcache.BudgetFromFraction(co.Fraction); err != nil {
			return nil, fmt.Errorf("engine: %w", err)
		}
	}
	blocks, err := kvcache.BlocksForBudget(mc.KVSpec(1, co.BlockSize, co.DType), budget)
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	cache, err := m.Backend().NewKVCache(mc.KVSpec(blocks, co.BlockSize, co.DType))
	if err != nil {
		return nil, fmt.Errorf("engine: allocate %d KV blocks: %w", blocks, err)
	}
	e, err := New(cfg, m, cache)
	if err != nil {
		cache.Close()
		return nil, err
	}
	e.ownsCache = true
	return e, nil
}
