package cuda

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// These tests call into the built library on any host: the ABI wiring
// (symbol table, trampolines, error mapping) and the host-side functions
// need no GPU. They skip when the library has not been built.

func builtLibrary(t *testing.T) *library {
	t.Helper()
	path := filepath.Join("build", libName)
	if p := os.Getenv("TANDEM_CUDA_LIB"); p != "" {
		path = p
	}
	if _, err := os.Stat(path); err != nil {
		t.Skip("library not built (make kernels)")
	}
	l, err := openLibrary(path)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(l.close)
	return l
}

func TestLibraryWeightBytes(t *testing.T) {
	l := builtLibrary(t)
	tests := []struct {
		typ        quant.Type
		rows, cols int
		want       int
		err        error
	}{
		{quant.F32, 3, 10, 120, nil},
		{quant.F16, 3, 10, 60, nil},
		{quant.BF16, 2, 64, 256, nil},
		{quant.Q4_0, 2, 64, 2 * 2 * (16 + 2), nil},
		{quant.Q4_1, 2, 64, 2 * 2 * (16 + 4), nil},
		{quant.Q5_0, 2, 64, 2 * 2 * (16 + 6), nil},
		{quant.Q5_1, 3, 576, 3 * 18 * (16 + 8), nil},
		{quant.Q8_0, 3, 32, 3 * (32 + 2), nil},
		{quant.Q4_K, 2, 256, 2 * (128 + 16), nil},
		{quant.Q5_K, 3, 512, 3 * 2 * (160 + 16), nil},
		{quant.Q6_K, 1, 768, 3 * (192 + 18), nil},
		{quant.Q4_1, 2, 48, 0, ErrInvalidArgument}, // not whole blocks
		{quant.Q4_K, 1, 128, 0, ErrInvalidArgument},
		{quant.Q6_K, 2, 288, 0, ErrInvalidArgument},
		{quant.Q5_0, 1, 48, 0, ErrInvalidArgument},
		{quant.Q5_1, 2, 16, 0, ErrInvalidArgument},
		{quant.Q3_K, 1, 256, 0, ErrUnsupported},
		{quant.Q8_1, 1, 256, 0, ErrUnsupported},
		{quant.Q2_K, 1, 256, 0, ErrUnsupported},
		{quant.F16, 0, 8, 0, ErrInvalidArgument},
	}
	for _, tc := range tests {
		got, err := l.weightBytes(int(tc.typ), tc.rows, tc.cols)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("%v %dx%d: err %v, want %v", tc.typ, tc.rows, tc.cols, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%v %dx%d: %d, %v; want %d", tc.typ, tc.rows, tc.cols, got, err, tc.want)
		}
		// The device layout holds exactly the ggml bytes, rearranged.
		if rb := tc.typ.RowBytes(tc.cols) * tc.rows; got != rb {
			t.Errorf("%v %dx%d: device size %d, ggml size %d", tc.typ, tc.rows, tc.cols, got, rb)
		}
	}
}

func TestLibraryErrorMapping(t *testing.T) {
	l := builtLibrary(t)
	tests := []struct {
		code int
		want error
		msg  string
	}{
		{codeArg, ErrInvalidArgument, "invalid argument"},
		{codeUnsupported, ErrUnsupported, "unsupported"},
		{codeNoNCCL, ErrNoNCCL, "libnccl.so.2 not found"},
		{-1000 - 5, ErrDevice, "nccl error 5"},
		{2, ErrDevice, "out of memory"}, // cudaErrorMemoryAllocation
	}
	for _, tc := range tests {
		err := l.check("op", cInt(tc.code))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("code %d: %v, want %v mentioning %q", tc.code, err, tc.want, tc.msg)
		}
	}
	if err := l.check("op", cInt(0)); err != nil {
		t.Errorf("code 0: %v", err)
	}
}

func TestLibraryWithoutDevice(t *testing.T) {
	l := builtLibrary(t)
	devs, err := l.devices()
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) > 0 {
		t.Skip("a CUDA device is present")
	}
	if _, err := l.create(0); !errors.Is(err, ErrDevice) {
		t.Fatalf("create without a device: %v, want ErrDevice", err)
	}
	if _, err := New(Config{LibPath: l.path}); !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "no CUDA device") {
		t.Fatalf("New without a device: %v", err)
	}
}
