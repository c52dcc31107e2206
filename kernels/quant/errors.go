package quant

import "errors"

// Sentinel errors; every error this package returns wraps one of them, so
// callers test with errors.Is.
var (
	// ErrUnsupported reports a type this package has no code for (for
	// example quantizing to Q2_K, or a dot product with an activation type
	// that is not the one ActivationType prescribes).
	ErrUnsupported = errors.New("quant: unsupported type")
	// ErrLength reports buffers whose sizes do not match: a value count that
	// is not a whole number of blocks, or a byte buffer of the wrong size.
	ErrLength = errors.New("quant: length mismatch")
)
