package quant

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The fixtures are written by scripts/gen-quant-fixtures.py with gguf-py's
// gguf.quants, the Python twin of ggml's reference code.
const fixtureDir = "../../testdata/quant"

func readF32s(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b)%4 != 0 {
		t.Fatalf("%s: %d bytes is not a float32 array", path, len(b))
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// sameFloat treats NaNs as equal and otherwise compares bits, so -0 and +0
// differ as they would in the reference.
func sameFloat(a, b float32) bool {
	if math.IsNaN(float64(a)) && math.IsNaN(float64(b)) {
		return true
	}
	return math.Float32bits(a) == math.Float32bits(b)
}

func TestGGUFPyFixtures(t *testing.T) {
	tests := []struct {
		typ      Type
		quantize bool // gguf-py has a quantizer for it: compare bytes too
	}{
		{F16, true}, {BF16, true}, {Q4_0, true}, {Q4_1, true}, {Q5_0, true},
		{Q5_1, true}, {Q8_0, true}, {Q4_K, false}, {Q5_K, false}, {Q6_K, false},
	}
	for _, tt := range tests {
		t.Run(tt.typ.String(), func(t *testing.T) {
			base := filepath.Join(fixtureDir, strings.ToLower(tt.typ.String()))
			q, err := os.ReadFile(base + ".q")
			if err != nil {
				t.Fatal(err)
			}
			want := readF32s(t, base+".out.f32")
			got := make([]float32, len(want))
			if err := Dequantize(tt.typ, q, got); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if !sameFloat(got[i], want[i]) {
					t.Fatalf("dequantized value %d = %v, gguf-py %v", i, got[i], want[i])
				}
			}
			if !tt.quantize {
				return
			}
			in := readF32s(t, base+".in.f32")
			enc := make([]byte, len(q))
			if err := Quantize(tt.typ, in, enc); err != nil {
				t.Fatal(err)
			}
			for i := range q {
				if enc[i] != q[i] {
					bb := tt.typ.BlockBytes()
					t.Fatalf("quantized byte %d (block %d, offset %d) = %#02x, gguf-py %#02x", i, i/bb, i%bb, enc[i], q[i])
				}
			}
		})
	}
}
