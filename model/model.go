// Package model opens a model file into everything a worker needs to run it:
// the memory-mapped GGUF file, its tokenizer and the Llama graph bound to a
// compute backend.
package model

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tandemserve/tandem/kernels"
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
	Llama     *llama.Model
	LoadTime  time.Duration
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

func build(path string, f *gguf.File, be kernels.Backend) (*Model, error) {
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	lm, err := llama.Load(f, be)
	if err != nil {
		return nil, fmt.Errorf("model: %s: %w", path, err)
	}
	if tok.VocabSize() > lm.Config().Vocab {
		return nil, fmt.Errorf("model: %s: tokenizer has %d tokens but the model only %d", path, tok.VocabSize(), lm.Config().Vocab)
	}
	id, err := ID(path, f)
	if err != nil {
		return nil, err
	}
	return &Model{ID: id, Path: path, File: f, Tokenizer: tok, Llama: lm}, nil
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
