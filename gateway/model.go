package gateway

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/gguf"
	"github.com/tandemserve/tandem/model/llama"
	"github.com/tandemserve/tandem/model/tokenizer"
)

// LoadModel reads what the gateway needs from a GGUF file: its tokenizer and
// shape. The weights are not touched, so a gateway needs no compute backend.
// The model is named after the file, without the .gguf extension.
func LoadModel(path string) (Model, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return Model{}, fmt.Errorf("gateway: %w", err)
	}
	defer f.Close()
	cfg, err := llama.ConfigFromGGUF(f)
	if err != nil {
		return Model{}, fmt.Errorf("gateway: %s: %w", path, err)
	}
	tok, err := tokenizer.FromGGUF(f)
	if err != nil {
		return Model{}, fmt.Errorf("gateway: %s: %w", path, err)
	}
	id, err := model.ID(path, f)
	if err != nil {
		return Model{}, fmt.Errorf("gateway: %w", err)
	}
	return Model{
		ID:            id,
		Name:          strings.TrimSuffix(filepath.Base(path), ".gguf"),
		ContextLength: cfg.ContextLength,
		Vocab:         cfg.Vocab,
		Tokenizer:     tok,
	}, nil
}
