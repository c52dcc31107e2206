// Package backends opens a compute backend by name, so every command and
// worker offers the same --backend choices.
package backends

import (
	"errors"
	"fmt"
	"log/slog"
	"runtime"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cpu"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/kernels/ref"
)

// ErrUnknown reports a backend name that is not built in.
var ErrUnknown = errors.New("backends: unknown backend")

// Options configure a backend.
type Options struct {
	// Threads is the CPU worker count; 0 means one per core.
	Threads int
	// Device is the GPU ordinal for GPU backends.
	Device int
	// Activations selects full-precision or 8-bit activations for products
	// with quantized weights.
	Activations kernels.Activations
	// Logger receives the backend's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Names lists the backends Open accepts.
func Names() []string { return []string{"cpu", "ref", "cuda"} }

// Open returns the named backend.
func Open(name string, opts Options) (kernels.Backend, error) {
	if opts.Threads <= 0 {
		opts.Threads = runtime.NumCPU()
	}
	switch name {
	case "cpu", "":
		cfg := cpu.DefaultConfig()
		cfg.Threads = opts.Threads
		cfg.Activations = opts.Activations
		return cpu.New(cfg, opts.Logger)
	case "ref":
		return ref.NewWith(opts.Activations), nil
	case "cuda":
		// Without libtandem_cuda.so or a GPU this fails with cuda.ErrNoCUDA
		// ("libtandem_cuda.so not found (run make kernels)" / "no CUDA device").
		log := opts.Logger
		if log == nil {
			log = slog.New(slog.DiscardHandler)
		}
		return cuda.New(cuda.Config{Device: opts.Device, Logger: log, Activations: opts.Activations})
	}
	return nil, fmt.Errorf("%w %q (choose one of %v)", ErrUnknown, name, Names())
}
