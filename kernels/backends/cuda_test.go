package backends

import (
	"errors"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/kernels/cuda"
)

// --backend cuda on a host without the kernel library or a GPU must fail
// with a message that says which, not fall back silently.
func TestOpenCUDAWithoutGPU(t *testing.T) {
	be, err := Open("cuda", Options{})
	if err == nil {
		be.Close()
		t.Skip("a CUDA device is present")
	}
	if !errors.Is(err, cuda.ErrNoCUDA) {
		t.Fatalf("Open(cuda) = %v, want cuda.ErrNoCUDA", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "run make kernels") && !strings.Contains(msg, "no CUDA device") {
		t.Fatalf("unclear error %q", msg)
	}
}
