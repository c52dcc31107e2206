package llama

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/comm"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/model/gguf"
)

// Architectures whose GGUF tensors and metadata follow the llama layout.
var supportedArchs = map[string]bool{"llama": true, "mistral": true}

// ConfigFromGGUF reads a model's architecture from GGUF metadata
// ("{arch}.block_count" and friends), applying llama.cpp's defaults for
// optional keys.
func ConfigFromGGUF(f *gguf.File) (Config, error) {
	arch, err := f.RequireString("general.architecture")
	if err != nil {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalidModel, err)
	}
	if !supportedArchs[arch] {
		return Config{}, fmt.Errorf("%w: architecture %q is not a Llama-family model", ErrInvalidModel, arch)
	}
	req := func(key string) (int, error) {
		v, err := f.RequireUint(arch + "." + key)
		if err != nil {
			return 0, fmt.Errorf("%w: %w", ErrInvalidModel, err)
		}
		if v > 1<<31 {
			return 0, fmt.Errorf("%w: %s.%s = %d is too large", ErrInvalidModel, arch, key, v)
		}
		return int(v), nil
	}
	opt := func(key string, def int) int {
		if v, ok := f.Uint(arch + "." + key); ok && v <= 1<<31 {
			return int(v)
		}
		return def
	}
	optFloat := func(key string, def float32) float32 {
		if v, ok := f.Float(arch + "." + key); ok {
			return float32(v)
		}
		return def
	}
	var c Config
	c.Name, _ = f.String("general.name")
	for _, p := range []struct {
		dst *int
		key string
	}{
		{&c.Layers, "block_count"}, {&c.Embd, "embedding_length"}, {&c.FF, "feed_forward_length"},
		{&c.Heads, "attention.head_count"}, {&c.ContextLength, "context_length"},
	} {
		if *p.dst, err = req(p.key); err != nil {
			return Config{}, err
		}
	}
	c.KVHeads = opt("attention.head_count_kv", c.Heads)
	if c.Heads > 0 {
		c.HeadDim = opt("attention.key_length", c.Embd/c.Heads)
	}
	c.RoPEDims = opt("rope.dimension_count", c.HeadDim)
	c.RoPEBase = optFloat("rope.freq_base", 10000)
	c.RoPEFreqScale = 1
	if s := optFloat("rope.scale_linear", 0); s > 0 {
		c.RoPEFreqScale = 1 / s
	}
	if typ, ok := f.String(arch + ".rope.scaling.type"); ok && typ == "linear" {
		if s := optFloat("rope.scaling.factor", 0); s > 0 {
			c.RoPEFreqScale = 1 / s
		}
	}
	c.RoPEInterleaved = true
	c.NormEps = optFloat("attention.layer_norm_rms_epsilon", 1e-5)
	c.Vocab = opt("vocab_size", 0)
	if c.Vocab == 0 {
		if toks, ok := f.Strings("tokenizer.ggml.tokens"); ok {
			c.Vocab = len(toks)
		} else if t, ok := f.Tensor("token_embd.weight"); ok && len(t.Dims) == 2 && t.Dims[1] < 1<<31 {
			c.Vocab = int(t.Dims[1])
		}
	}
	return c, c.Validate()
}

// ggufSource adapts a GGUF file to TensorSource without copying: weights
// reference the file's read-only mapping.
type ggufSource struct{ f *gguf.File }

func (s ggufSource) LookupTensor(name string) (quant.Type, []uint64, []byte, bool) {
	t, ok := s.f.Tensor(name)
	if !ok {
		return 0, nil, nil, false
	}
	return t.Type, t.Dims, s.f.TensorData(t), true
}

// Load builds a model from a GGUF file. The file must stay open while the
// model is used when the backend keeps references to its mapping (the CPU
// backends do).
func Load(f *gguf.File, be kernels.Backend) (*Model, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return New(cfg, be, ggufSource{f})
}

// LoadTP builds a tensor-parallel model from a GGUF file, one rank per
// backend; see NewTP.
func LoadTP(f *gguf.File, backends []kernels.Backend, comms []comm.Communicator) (*TP, error) {
	cfg, err := ConfigFromGGUF(f)
	if err != nil {
		return nil, err
	}
	return NewTP(cfg, backends, comms, ggufSource{f})
}
