package kvcache

import (
	"errors"
	"testing"

	"github.com/tandemserve/tandem/kernels"
)

func TestBlocksForBudget(t *testing.T) {
	// SmolLM2-135M: 30 layers, 3 KV heads of 64.
	spec := kernels.KVSpec{Layers: 30, BlockSize: 16, KVHeads: 3, HeadDim: 64, DType: kernels.KVF16}
	perBlock := int64(30 * 2 * 16 * 3 * 64 * 2) // 368,640 bytes
	int8Spec := spec
	int8Spec.DType = kernels.KVInt8
	tests := []struct {
		name    string
		spec    kernels.KVSpec
		budget  int64
		want    int
		wantErr error
	}{
		{"exact", spec, 10 * perBlock, 10, nil},
		{"rounds down", spec, 10*perBlock + perBlock - 1, 10, nil},
		{"int8 fits about twice as many", int8Spec, 10 * perBlock, 18, nil},
		{"too small", spec, perBlock - 1, 0, ErrBudget},
		{"bad spec", kernels.KVSpec{}, 1 << 30, 0, kernels.ErrInvalidKVSpec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := BlocksForBudget(tc.spec, tc.budget)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("blocks = %d, want %d", got, tc.want)
			}
		})
	}
}

func TestParseMemAvailable(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    int64
		wantErr bool
	}{
		{"typical", "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   12000000 kB\n", 12000000 * 1024, false},
		{"no unit", "MemAvailable: 5\n", 5 * 1024, false},
		{"missing", "MemTotal: 5 kB\n", 0, true},
		{"garbage number", "MemAvailable: 12x kB\n", 0, true},
		{"negative", "MemAvailable: -5 kB\n", 0, true},
		{"wrong unit", "MemAvailable: 5 MB\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMemAvailable([]byte(tc.in))
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tc.wantErr)
			}
			if err != nil && !errors.Is(err, ErrBudget) {
				t.Errorf("err = %v, want ErrBudget", err)
			}
			if got != tc.want {
				t.Errorf("got %d, want %d", got, tc.want)
			}
		})
	}
}

func TestBudgetFromFraction(t *testing.T) {
	for _, f := range []float64{0, -1, 1.5} {
		if _, err := BudgetFromFraction(f); !errors.Is(err, ErrBudget) {
			t.Errorf("fraction %v: err = %v, want ErrBudget", f, err)
		}
	}
	got, err := BudgetFromFraction(0.5)
	if err != nil {
		t.Skipf("no /proc/meminfo here: %v", err)
	}
	if got <= 0 {
		t.Errorf("half of available memory = %d bytes", got)
	}
}

func FuzzParseMemAvailable(f *testing.F) {
	f.Add([]byte("MemAvailable:   12000000 kB\n"))
	f.Add([]byte("MemAvailable: 1 kB"))
	f.Add([]byte("MemAvailable:"))
	f.Add([]byte("\x00MemAvailable: 99999999999999999999 kB\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := ParseMemAvailable(data)
		if err == nil && v < 0 {
			t.Fatalf("negative result %d without error", v)
		}
	})
}
