package cuda

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// The K-quant device code (csrc/kquant.cuh) also compiles for the host
// against the small CUDA emulation in emu/, one thread per CUDA thread with
// warp shuffles on barriers. These tests run it where there is no GPU and
// compare it with kernels/quant: weight repacking and dequantization and the
// Q8_K activations (codes, scales, run sums) bit for bit, products within
// float summation order, and batch invariance bit for bit. gpu-check runs the
// same code on a GPU (TestGPUMatMulMatchesRef and the others); this test
// keeps a CPU-only CI honest about it between GPU runs. It skips when no
// C++20 compiler is installed.

// emuCompiler returns a C++ compiler that builds C++20 threads and
// barriers, or skips.
func emuCompiler(t *testing.T) string {
	t.Helper()
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "g++"
	}
	path, err := exec.LookPath(cxx)
	if err != nil {
		t.Skipf("no C++ compiler (%s): %v", cxx, err)
	}
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe.cpp")
	if err := os.WriteFile(probe, []byte("#include <barrier>\n#include <thread>\nint main() { std::barrier<> b{1}; b.arrive_and_wait(); }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(path, "-std=c++20", "-pthread", probe, "-o", filepath.Join(dir, "probe")).CombinedOutput(); err != nil {
		t.Skipf("%s cannot build C++20 barriers: %v\n%s", path, err, out)
	}
	return path
}

// buildEmu compiles emu/<name>.cpp against the emulation.
func buildEmu(t *testing.T, name string) string {
	t.Helper()
	cxx := emuCompiler(t)
	exe := filepath.Join(t.TempDir(), name)
	// The emulation's cuda_runtime.h must shadow any real one: -I emu first.
	cmd := exec.Command(cxx, "-std=c++20", "-O1", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror",
		"-Wno-unknown-pragmas", "-Iemu", "-Icsrc", "-I.", "-pthread", "emu/"+name+".cpp", "-o", exe)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the host emulation: %v\n%s", err, out)
	}
	return exe
}

// emuActivations are activation patterns that stress the Q8_K quantizer.
var emuActivations = []struct {
	name string
	fill func(rng *rand.Rand, x []float32, cols int)
}{
	{"normal", func(rng *rand.Rand, x []float32, cols int) {}},
	{"zero block, ties, NaN", func(rng *rand.Rand, x []float32, cols int) {
		clear(x[:256]) // scale 0
		if len(x) > cols {
			// -7 comes first among the largest magnitudes, so it sets
			// the sign of the scale.
			x[cols+5], x[cols+100], x[cols+3] = -7, 7, float32(math.NaN())
		}
	}},
	{"magnitudes", func(rng *rand.Rand, x []float32, cols int) {
		for i := range x {
			x[i] *= float32(math.Pow(10, float64(rng.IntN(61)-30)))
		}
	}},
}

// emuWeights returns rows x cols weights of type typ: quantized from normal
// values, or (raw) random bytes with finite scales, which reach bit patterns
// the quantizer rarely writes (high scale bits, negative Q6_K scales).
func emuWeights(rng *rand.Rand, typ quant.Type, rows, cols int, raw bool) ([]byte, error) {
	w := make([]byte, typ.RowBytes(cols)*rows)
	if !raw {
		return w, quant.Quantize(typ, randVals(rng, rows*cols, 1/float32(math.Sqrt(float64(cols)))), w)
	}
	for i := range w {
		w[i] = byte(rng.Uint32())
	}
	bb := typ.BlockBytes()
	for b := 0; b < len(w)/bb; b++ {
		blk := w[b*bb : (b+1)*bb]
		scale := func(off int) { // a finite half in [2^-14, 2^-6)
			binary.LittleEndian.PutUint16(blk[off:], uint16(1+rng.IntN(8))<<10|uint16(rng.IntN(1024)))
		}
		if typ == quant.Q6_K {
			scale(208)
		} else {
			scale(0)
			scale(2)
		}
	}
	return w, nil
}

func TestKQuantKernelsEmulated(t *testing.T) {
	exe := buildEmu(t, "kquant_check")
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(21, 22))
	// 1, 3, 5 and 16 blocks a row (a warp takes four a step); 19 tokens are
	// groups of 16, 2 and 1, 8 and 5 the other group widths.
	for i, tc := range []struct {
		typ        quant.Type
		rows, cols int
		tokens     int
		raw        bool
	}{
		{quant.Q4_K, 9, 256, 3, false}, {quant.Q4_K, 6, 4096, 17, false}, {quant.Q4_K, 5, 768, 4, true},
		{quant.Q5_K, 13, 768, 19, false}, {quant.Q5_K, 4, 1024, 8, true},
		{quant.Q6_K, 7, 1280, 5, false}, {quant.Q6_K, 5, 512, 1, false}, {quant.Q6_K, 6, 768, 6, true},
	} {
		act := emuActivations[i%len(emuActivations)]
		name := fmt.Sprintf("%v/%dx%d/%d tokens/%s", tc.typ, tc.rows, tc.cols, tc.tokens, act.name)
		if tc.raw {
			name += "/raw weights"
		}
		t.Run(name, func(t *testing.T) {
			w, err := emuWeights(rng, tc.typ, tc.rows, tc.cols, tc.raw)
			if err != nil {
				t.Fatal(err)
			}
			x := randVals(rng, tc.tokens*tc.cols, 1)
			act.fill(rng, x, tc.cols)
			got := runEmu(t, exe, filepath.Join(dir, fmt.Sprintf("case%d", i)), tc.typ, tc.rows, tc.cols, w, x)
			checkEmu(t, tc.typ, tc.rows, tc.cols, w, x, got)
		})
	}
}

// emuResult is what kquant_check computed.
type emuResult struct {
	deq             []float32
	codes           []byte
	scales          []float32
	bsums           []byte // little-endian int16, as in a Q8_K block
	grouped, single []float32
}

func runEmu(t *testing.T, exe, base string, typ quant.Type, rows, cols int, w []byte, x []float32) emuResult {
	t.Helper()
	n := len(x) / cols
	out := runCheckTool(t, exe, base, typ, rows, cols, w, x,
		4*rows*cols+n*cols+4*n*cols/256+2*n*cols/16+2*4*n*rows)
	var r emuResult
	r.deq = out.floats(rows * cols)
	r.codes = out.bytes(n * cols)
	r.scales = out.floats(n * cols / 256)
	r.bsums = out.bytes(2 * n * cols / 16)
	r.grouped = out.floats(n * rows)
	r.single = out.floats(n * rows)
	return r
}

// runCheckTool feeds one case to an emulation check program (type, rows,
// cols and token count as little-endian uint32, the weight bytes, then the
// activations as f32) and returns its output, which must be want bytes.
func runCheckTool(t *testing.T, exe, base string, typ quant.Type, rows, cols int, w []byte, x []float32, want int) *toolOutput {
	t.Helper()
	in := binary.LittleEndian.AppendUint32(nil, uint32(typ))
	for _, v := range []int{rows, cols, len(x) / cols} {
		in = binary.LittleEndian.AppendUint32(in, uint32(v))
	}
	in = append(in, w...)
	for _, v := range x {
		in = binary.LittleEndian.AppendUint32(in, math.Float32bits(v))
	}
	if err := os.WriteFile(base+".in", in, 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(exe, base+".in", base+".out").CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(exe), err, out)
	}
	out, err := os.ReadFile(base + ".out")
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != want {
		t.Fatalf("%s wrote %d bytes, want %d", filepath.Base(exe), len(out), want)
	}
	return &toolOutput{b: out}
}

// toolOutput hands out a check program's output section by section.
type toolOutput struct{ b []byte }

func (o *toolOutput) bytes(k int) []byte {
	b := o.b[:k]
	o.b = o.b[k:]
	return b
}

func (o *toolOutput) floats(k int) []float32 {
	b := o.bytes(4 * k)
	v := make([]float32, k)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v
}

func checkEmu(t *testing.T, typ quant.Type, rows, cols int, w []byte, x []float32, got emuResult) {
	t.Helper()
	deq := make([]float32, rows*cols)
	if err := quant.Dequantize(typ, w, deq); err != nil {
		t.Fatal(err)
	}
	for i := range deq {
		if math.Float32bits(deq[i]) != math.Float32bits(got.deq[i]) {
			t.Fatalf("dequantized value %d (row %d): %g, want %g", i, i/cols, got.deq[i], deq[i])
		}
	}
	n, nbr, rb := len(x)/cols, cols/256, typ.RowBytes(cols)
	ab := quant.Q8_K.RowBytes(cols)
	act := make([]byte, ab)
	for tok := 0; tok < n; tok++ {
		if err := quant.QuantizeActivations(typ, x[tok*cols:(tok+1)*cols], act); err != nil {
			t.Fatal(err)
		}
		for b := 0; b < nbr; b++ {
			blk := act[b*292 : (b+1)*292]
			if d := binary.LittleEndian.Uint32(blk); d != math.Float32bits(got.scales[tok*nbr+b]) {
				t.Fatalf("token %d block %d: Q8_K scale %g, want %g", tok, b, got.scales[tok*nbr+b], math.Float32frombits(d))
			}
			codes := got.codes[(tok*nbr+b)*256 : (tok*nbr+b+1)*256]
			for j := range codes {
				if codes[j] != blk[4+j] {
					t.Fatalf("token %d block %d: Q8_K code %d is %d, want %d", tok, b, j, int8(codes[j]), int8(blk[4+j]))
				}
			}
			sums := got.bsums[(tok*nbr+b)*32 : (tok*nbr+b+1)*32]
			for j := 0; j < 16; j++ {
				g, w := int16(binary.LittleEndian.Uint16(sums[2*j:])), int16(binary.LittleEndian.Uint16(blk[260+2*j:]))
				if g != w {
					t.Fatalf("token %d block %d: Q8_K sum of run %d is %d, want %d", tok, b, j, g, w)
				}
			}
		}
		want := make([]float32, rows)
		var scale float64
		for r := range want {
			v, err := quant.VecDot(typ, w[r*rb:(r+1)*rb], act, cols)
			if err != nil {
				t.Fatal(err)
			}
			want[r] = v
			scale = math.Max(scale, math.Abs(float64(v)))
		}
		for r, v := range want {
			g, s := got.grouped[tok*rows+r], got.single[tok*rows+r]
			if math.Float32bits(g) != math.Float32bits(s) {
				t.Fatalf("token %d row %d: %g in a token group, %g alone: not batch-invariant", tok, r, g, s)
			}
			// Blocks match the reference exactly; only the order of the
			// float sum over a row's blocks differs.
			if d := math.Abs(float64(g - v)); !(d <= 1e-5*(1+scale)) {
				t.Fatalf("token %d row %d: %g, want %g (difference %g, bound %g)", tok, r, g, v, d, 1e-5*(1+scale))
			}
		}
	}
}
