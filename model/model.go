// Package model opens a model file into everything a worker needs to run it:
// the memory-mapped GGUF file, its tokenizer and the Llama graph bound to a
// compute backend.
package model

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/comm"
	"github.com/tandemserve/tandem/model/gguf"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// DefaultFile is the file name of the default model.
const DefaultFile = "SmolLM2-135M-Instruct.Q4_1.gguf"

// DefaultPath is where scripts/fetch-model.sh puts the default model:
// $TANDEM_MODEL if set, else $TANDEM_MODEL_DIR or ~/.cache/tandem/models.
func DefaultPath() string {
	if p := os.Getenv("TANDEM_MODEL"); p != "" {
		return p
	}
	dir := os.Getenv("TANDEM_MODEL_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = "."
		}
		dir = filepath.Join(home, ".cache", "tandem", "models")
	}
	return filepath.Join(dir, DefaultFile)
}

// Model is an opened model. Close releases the file mapping; the backend is
// the caller's.
type Model struct {
	// ID names the model in the cluster: the file's base name plus a digest of
	// its header, metadata and tensor directory, so two different files never
	// share prefix-cache entries or exchange KV blocks.
	ID        string
	Path      string
	File      *gguf.File
	Tokenizer *tokenizer.Tokenizer
	// Llama is the graph on one backend; nil when the model runs
	// tensor-parallel, when TP is set instead. Use the Model's own Config,
	// Forward and NewKVCache to work with either.
	Llama    *llama.Model
	TP       *llama.TP
	LoadTime time.Duration
}

// Config is the (whole) model's architecture.
func (m *Model) Config() llama.Config {
	if m.TP != nil {
		return m.TP.Config()
	}
	return m.Llama.Config()
}

// Forward runs one batch over cache (from NewKVCache); see llama.Model.Forward.
func (m *Model) Forward(ctx context.Context, cache kernels.KVCache, b *llama.Batch, onLayer func(layer int)) ([]float32, error) {
	if m.TP != nil {
		return m.TP.Forward(ctx, cache, b, onLayer)
	}
	return m.Llama.Forward(ctx, cache, b, onLayer)
}

// NewKVCache allocates the model's KV cache: blocks blocks of blockSize
// tokens, sharded across the ranks of a tensor-parallel model.
func (m *Model) NewKVCache(blocks, blockSize int, dtype kernels.KVDType) (kernels.KVCache, error) {
	if m.TP != nil {
		return m.TP.NewKVCache(blocks, blockSize, dtype)
	}
	return m.Llama.NewKVCache(blocks, blockSize, dtype)
}

// Open maps the GGUF file at path and binds its weights to be.
func Open(path string, be kernels.Backend) (*Model, error) {
	start := time.Now()
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := build(path, f, be)
	if err != nil {
		f.Close()
		return nil, err
	}
	m.LoadTime = time.Since(start)
	return m, nil
}

// OpenTP maps the GGUF file at path and splits its weights tensor-parallel
// across backends, one rank each, connected by comms.
func OpenTP(path string, backends []kernels.Backend, comms []comm.Communicator) (*Model, error) {
	start := time.Now()
	f, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("model: %w", err)
	}
	m, err := assemble(path, f, func() (*Model, error) {
		tp, err := llama.LoadTP(f, backends, comms)
		return &Model{TP: tp}, err
	})
	if err != nil {
		f.Close()
		return nil, err
	}
	m.LoadTime = time.Since(start)
	return m, nil
}

func build(path string, f *gguf.File, be kernels.Backend) (*Model, error) {
	return assemble(path, f, func() (*Model, error) {
		lm, err := llama.Load(f, be)
		return &Model{Llama: lm}, err
	})
}

// assemble binds the graph with bind and adds the tokenizer and identity.
func assemble(path string, f *gguf.File, bind func() (*Model, error)) (*Model, error) {
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	m, err := bind()
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	if tok.VocabSize() > m.Config().Vocab {
		return nil, fmt.Errorf("model: %s: tokenizer has %d tokens but the model only %d", path, tok.VocabSize(), m.Config().Vocab)
	}
	id, err := ID(path, f)
	if err != nil {
		return nil, err
	}
	m.ID, m.Path, m.File, m.Tokenizer = id, path, f, tok
	return m, nil
}

// ID names the model file at path (opened as f) in the cluster: its base name
// and a digest of everything before the tensor data (header, metadata and
// tensor directory): cheap, and different for any two differently converted
// or quantized files. Prefix-cache hashes and KV handshakes use it.
func ID(path string, f *gguf.File) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("model: %w", err)
	}
	defer fh.Close()
	h := sha256.New()
	if _, err := io.CopyN(h, fh, int64(f.DataOffset)); err != nil {
		return "", fmt.Errorf("model: digest %s: %w", path, err)
	}
	name := strings.TrimSuffix(filepath.Base(path), ".gguf")
	return name + "@" + hex.EncodeToString(h.Sum(nil)[:6]), nil
}

// Close unmaps the file. The model must not be used afterwards.
func (m *Model) Close() error { return m.File.Close() }
