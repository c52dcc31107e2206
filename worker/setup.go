package worker

import (
	"fmt"
	"log/slog"

	"github.com/tandemserve/tandem/engine"
	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model"
)

// EngineConfig sizes a worker's engine.
type EngineConfig struct {
	// Blocks and BlockSize size the paged KV cache.
	Blocks    int
	BlockSize int
	KVDType   kernels.KVDType
	// ChunkSize bounds the prompt tokens of one sequence per step (chunked
	// prefill); MaxTokens the token rows of one step; MaxSeqs the sequences.
	ChunkSize     int
	MaxTokens     int
	MaxSeqs       int
	PrefixCaching bool
}

// DefaultEngineConfig fits the default 135M model's whole context several
// times over in a few hundred MiB.
func DefaultEngineConfig() EngineConfig {
	return EngineConfig{Blocks: 1024, BlockSize: 16, KVDType: kernels.KVF16, ChunkSize: 256, MaxTokens: 512, MaxSeqs: 32, PrefixCaching: true}
}

// Validate checks the sizes.
func (c EngineConfig) Validate() error {
	if c.Blocks < 1 || c.BlockSize < 1 || c.ChunkSize < 1 || c.MaxTokens < 1 || c.MaxSeqs < 1 {
		return fmt.Errorf("%w: every size must be positive: %+v", ErrInvalidConfig, c)
	}
	return nil
}

// NewEngine builds and starts an engine for m. The caller closes the engine,
// then the returned cache.
func NewEngine(m *model.Model, cfg EngineConfig, log *slog.Logger) (*engine.Engine, kernels.KVCache, error) {
	if err := cfg.Validate(); err != nil {
		return nil, nil, err
	}
	mc := m.Config()
	cache, err := m.NewKVCache(cfg.Blocks, cfg.BlockSize, cfg.KVDType)
	if err != nil {
		return nil, nil, fmt.Errorf("worker: kv cache: %w", err)
	}
	ec := engine.DefaultConfig()
	ec.Scheduler.ChunkSize = cfg.ChunkSize
	ec.Scheduler.MaxTokens = cfg.MaxTokens
	ec.Scheduler.MaxSeqs = cfg.MaxSeqs
	ec.Scheduler.MaxSeqLen = mc.ContextLength
	ec.ModelID = m.ID
	ec.PrefixCaching = cfg.PrefixCaching
	ec.Vocab = mc.Vocab
	ec.IsEOG = m.Tokenizer.IsEOG
	ec.Logger = log
	e, err := engine.New(ec, m, cache)
	if err != nil {
		cache.Close()
		return nil, nil, fmt.Errorf("worker: %w", err)
	}
	if err := e.Start(); err != nil {
		e.Close()
		cache.Close()
		return nil, nil, fmt.Errorf("worker: %w", err)
	}
	return e, cache, nil
}
