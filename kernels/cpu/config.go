package cpu

import (
	"fmt"
	"runtime"

	"github.com/tandemserve/tandem/kernels"
)

// Level is a kernel instruction-set level.
type Level int

const (
	// LevelGeneric is portable C.
	LevelGeneric Level = 0
	// LevelAVX2 needs AVX2, FMA and F16C.
	LevelAVX2 Level = 1
	// LevelAVX512 needs AVX-512 F/BW/VL and VNNI.
	LevelAVX512 Level = 2
)

func (l Level) String() string {
	switch l {
	case LevelGeneric:
		return "generic"
	case LevelAVX2:
		return "avx2"
	case LevelAVX512:
		return "avx512vnni"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// maxThreads bounds Config.Threads: more pool threads than this only add
// dispatch latency for the matrix sizes Tandem runs.
const maxThreads = 256

// Config configures a Backend.
type Config struct {
	// Threads is the number of threads kernels split work over, the calling
	// thread included.
	Threads int
	// MaxLevel caps the kernel level; the backend uses the highest level up
	// to it that the CPU supports.
	MaxLevel Level
	// Activations selects full-precision (default) or 8-bit activations
	// for products with quantized weights.
	Activations kernels.Activations
}

// DefaultConfig uses every CPU and the best kernels the CPU runs.
func DefaultConfig() Config {
	return Config{Threads: runtime.NumCPU(), MaxLevel: LevelAVX512}
}

// Validate reports a config that cannot build a Backend.
func (c Config) Validate() error {
	if c.Threads < 1 || c.Threads > maxThreads {
		return fmt.Errorf("%w: Threads %d not in [1, %d]", ErrInvalidConfig, c.Threads, maxThreads)
	}
	if c.Activations != kernels.ActF32 && c.Activations != kernels.ActQ8 {
		return fmt.Errorf("%w: Activations %v", ErrInvalidConfig, c.Activations)
	}
	if c.MaxLevel < LevelGeneric || c.MaxLevel > LevelAVX512 {
		return fmt.Errorf("%w: MaxLevel %v", ErrInvalidConfig, c.MaxLevel)
	}
	return nil
}
