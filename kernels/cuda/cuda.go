// Package cuda is the NVIDIA GPU implementation of kernels.Backend.
//
// The kernels live in csrc/*.cu and are compiled by scripts/build-cuda.sh
// (make kernels) into libtandem_cuda.so, which this package loads at run time
// with dlopen. The Go binary therefore builds, links and runs on machines with
// no CUDA toolkit, driver or GPU; New reports ErrNoCUDA there.
//
// Memory model: every Tensor, Weight and KVCache is device memory owned by the
// Backend that made it. Kernels run asynchronously on the backend's one CUDA
// stream, in call order; Read is the synchronisation point that waits for
// them. The Backend interface has no error results on its compute methods, so
// a failure (a CUDA error, or an index that would read out of bounds, which is
// checked on the host before any launch) is recorded and returned by Err, and
// the failing call does nothing further. Callers check Err after a step, the
// same way they would check a stream's status.
//
// Activation tensors are freed when they become unreachable: a cleanup puts
// their memory on a free list that later NewTensor calls of the same size
// reuse, so a step loop that allocates the same shapes every step does not
// grow device memory. Weights and caches are freed by their Close or by the
// Backend's Close.
package cuda

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/tandemserve/tandem/kernels"
)

// Sentinel errors. Errors returned by this package wrap one of them.
var (
	// ErrNoCUDA reports that CUDA cannot be used here: the library is
	// missing or does not load, or there is no CUDA device or driver.
	ErrNoCUDA = errors.New("cuda: CUDA not available")
	// ErrABI reports a library built from other sources than this package.
	ErrABI = errors.New("cuda: library ABI mismatch")
	// ErrDevice reports an error returned by the CUDA runtime.
	ErrDevice = errors.New("cuda: device error")
	// ErrUnsupported reports a weight format or shape the kernels lack.
	ErrUnsupported = errors.New("cuda: unsupported")
	// ErrInvalidArgument reports a call the kernels rejected or an index
	// out of range (token id, slot, block, row).
	ErrInvalidArgument = errors.New("cuda: invalid argument")
	// ErrNoNCCL reports that libnccl.so.2 could not be loaded.
	ErrNoNCCL = errors.New("cuda: NCCL not available")
	// ErrClosed reports use of a closed backend.
	ErrClosed = errors.New("cuda: backend closed")
)

// Config selects the library and the device.
type Config struct {
	// LibPath is the path of libtandem_cuda.so; empty searches the usual
	// places (see libraryCandidates) and $TANDEM_CUDA_LIB.
	LibPath string
	// Device is the CUDA device ordinal.
	Device int
	// Logger receives device errors once each; nil uses slog.Default.
	Logger *slog.Logger
	// Activations is the precision asked for in products with quantized
	// weights. The kernels implement only kernels.ActQ8 (activations
	// quantized to 8 bits as llama.cpp does, and as kernels/ref does in that
	// mode); with kernels.ActF32, the zero value, New logs at Info that the
	// backend runs 8-bit activations instead, so that the difference from a
	// CPU run is visible rather than silent.
	Activations kernels.Activations
}

// DefaultConfig uses device 0 and searches for the library.
func DefaultConfig() Config { return Config{} }

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Device < 0 {
		return fmt.Errorf("%w: device %d", ErrInvalidArgument, c.Device)
	}
	if c.Activations != kernels.ActF32 && c.Activations != kernels.ActQ8 {
		return fmt.Errorf("%w: activations %v", ErrInvalidArgument, c.Activations)
	}
	return nil
}

// DeviceInfo describes one GPU as the CUDA runtime reports it.
type DeviceInfo struct {
	Index             int
	Name              string
	TotalMemory       uint64
	ComputeCapability [2]int
	Multiprocessors   int
	MemoryBusBits     int
	MemoryClockKHz    int // 0 when the runtime does not report it
	DriverVersion     int // e.g. 12080 for CUDA 12.8
	RuntimeVersion    int
}

// PeakBandwidth is the theoretical DRAM bandwidth in bytes/s: two transfers
// per memory clock over the bus (HBM and GDDR as the runtime reports them),
// or a table value for known parts when the clock is not reported.
func (d DeviceInfo) PeakBandwidth() float64 {
	if d.MemoryClockKHz > 0 && d.MemoryBusBits > 0 {
		return 2 * float64(d.MemoryClockKHz) * 1e3 * float64(d.MemoryBusBits) / 8
	}
	for _, k := range knownBandwidth {
		if containsFold(d.Name, k.name) {
			return k.bytesPerSec
		}
	}
	return 0
}

// knownBandwidth are datasheet figures, most specific name first.
var knownBandwidth = []struct {
	name        string
	bytesPerSec float64
}{
	{"H200", 4.8e12},
	{"H100 PCIe", 2.0e12},
	{"H100", 3.35e12},
	{"A100-SXM4-80GB", 2.039e12},
	{"A100", 1.555e12},
	{"L40S", 864e9},
	{"L4", 300e9},
}

func containsFold(s, sub string) bool {
	n, m := len(s), len(sub)
	for i := 0; i+m <= n; i++ {
		if equalFoldASCII(s[i:i+m], sub) {
			return true
		}
	}
	return false
}

func equalFoldASCII(a, b string) bool {
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'a' <= x && x <= 'z' {
			x -= 'a' - 'A'
		}
		if 'a' <= y && y <= 'z' {
			y -= 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// Devices lists the CUDA devices visible through the library at libPath
// (empty: search). It returns ErrNoCUDA when the library is missing, and an
// empty list when the library loads but no device or driver is present.
func Devices(libPath string) ([]DeviceInfo, error) {
	l, err := openLibrary(libPath)
	if err != nil {
		return nil, err
	}
	defer l.close()
	return l.devices()
}
