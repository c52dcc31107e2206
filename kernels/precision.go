package kernels

import "fmt"

// Activations selects how a backend's matrix products treat activations when
// the weights are quantized.
type Activations uint8

const (
	// ActF32 multiplies f32 activations with the dequantized weights. The
	// results follow an f32 reference of the same file (Hugging Face
	// transformers dequantizes GGUF weights and runs them this way): the
	// accurate default.
	ActF32 Activations = iota
	// ActQ8 rounds each block of 32 (or 256) activations to 8-bit integers
	// and uses integer dot products, as llama.cpp's CPU backend does: faster
	// where compute bound (prefill), and numerically compatible with
	// llama.cpp, but the rounding noise can flip near-tied greedy choices.
	ActQ8
)

func (a Activations) String() string {
	switch a {
	case ActF32:
		return "f32"
	case ActQ8:
		return "q8"
	}
	return fmt.Sprintf("Activations(%d)", uint8(a))
}

// ParseActivations parses "f32" or "q8".
func ParseActivations(s string) (Activations, error) {
	switch s {
	case "f32", "":
		return ActF32, nil
	case "q8":
		return ActQ8, nil
	}
	return 0, fmt.Errorf("kernels: unknown activation precision %q (want f32 or q8)", s)
}
