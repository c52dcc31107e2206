package cpu

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
)

// rowCounts covers the single-threaded path (< 8 rows) and the pool path.
var rowCounts = []int{1, 3, 17, 64}

// closeTo reports the first index where got and want differ by more than
// abs + rel*|want|.
func closeTo(got, want []float32, abs, rel float64) (int, bool) {
	for i := range want {
		if d := math.Abs(float64(got[i]) - float64(want[i])); !(d <= abs+rel*math.Abs(float64(want[i]))) {
			return i, false
		}
	}
	return -1, true
}

func TestHalfConversionsMatchQuant(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		got, want := cF16ToF32(uint16(h)), quant.F16ToF32(uint16(h))
		if math.Float32bits(got) != math.Float32bits(want) && !(got != got && want != want) {
			t.Fatalf("f16 %#04x: got %g want %g", h, got, want)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	cases := []float32{0, -0, 1, -2.5, 65504, 65519, 65520, 1e9, 6e-8, 3e-8, 2.9802322e-08, 5.96e-8, 1e-5, -6.1e-5}
	for i := 0; i < 100000; i++ {
		cases = append(cases, math.Float32frombits(r.Uint32()))
	}
	for _, f := range cases {
		if f != f {
			continue // NaN payloads may differ; both stay NaN (checked above)
		}
		if got, want := cF32ToF16(f), quant.F32ToF16(f); got != want {
			t.Fatalf("f32 %g (%#08x): got %#04x want %#04x", f, math.Float32bits(f), got, want)
		}
	}
}

func TestRowOpsMatchReference(t *testing.T) {
	b := newBackend(t, Config{Threads: 2, MaxLevel: LevelAVX512})
	rb := ref.New()
	for _, rows := range rowCounts {
		for _, cols := range []int{37, 576} {
			t.Run(fmt.Sprintf("%dx%d", rows, cols), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(rows), uint64(cols)))
				x, y := randVec(r, rows*cols, 2), randVec(r, rows*cols, 2)
				wv := randVec(r, cols, 1)
				wb := make([]byte, 4*cols)
				for i, v := range wv {
					binary.LittleEndian.PutUint32(wb[4*i:], math.Float32bits(v))
				}
				type op struct {
					name     string
					run      func(kernels.Backend) []float32
					abs, rel float64
				}
				ops := []op{
					{"RMSNorm", func(be kernels.Backend) []float32 {
						w, err := be.NewWeight(quant.F32, 1, cols, wb)
						if err != nil {
							t.Fatal(err)
						}
						dst := be.NewTensor(rows, cols)
						be.RMSNorm(dst, tensorOf(be, rows, cols, x), w, 1e-5)
						return readAll(be, dst)
					}, 1e-6, 1e-5},
					{"Add", func(be kernels.Backend) []float32 {
						dst := tensorOf(be, rows, cols, x)
						be.Add(dst, tensorOf(be, rows, cols, y))
						return readAll(be, dst)
					}, 0, 0},
					{"SwiGLU", func(be kernels.Backend) []float32 {
						dst := be.NewTensor(rows, cols)
						be.SwiGLU(dst, tensorOf(be, rows, cols, x), tensorOf(be, rows, cols, y))
						return readAll(be, dst)
					}, 1e-6, 1e-6},
				}
				for _, o := range ops {
					got, want := o.run(b), o.run(rb)
					if i, ok := closeTo(got, want, o.abs, o.rel); !ok {
						t.Errorf("%s[%d]: got %g want %g", o.name, i, got[i], want[i])
					}
				}
			})
		}
	}
}

func TestRoPEMatchesReference(t *testing.T) {
	b := newBackend(t, Config{Threads: 2, MaxLevel: LevelAVX512})
	rb := ref.New()
	params := []kernels.RoPEParams{
		{Heads: 9, HeadDim: 64, Dims: 64, Base: 100000, FreqScale: 1, Interleaved: true},
		{Heads: 9, HeadDim: 64, Dims: 64, Base: 100000, FreqScale: 1, Interleaved: false},
		{Heads: 3, HeadDim: 16, Dims: 8, Base: 10000, FreqScale: 0.5, Interleaved: false},
		{Heads: 2, HeadDim: 6, Dims: 6, Base: 10000, FreqScale: 1, Interleaved: true},
	}
	for i, p := range params {
		for _, rows := range rowCounts {
			t.Run(fmt.Sprintf("%d/T=%d", i, rows), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(i), uint64(rows)))
				cols := p.Heads * p.HeadDim
				x := randVec(r, rows*cols, 1)
				pos := make([]int32, rows)
				for j := range pos {
					pos[j] = int32(r.IntN(9000))
				}
				run := func(be kernels.Backend) []float32 {
					xt := tensorOf(be, rows, cols, x)
					be.RoPE(xt, pos, p)
					return readAll(be, xt)
				}
				got, want := run(b), run(rb)
				if j, ok := closeTo(got, want, 1e-6, 1e-6); !ok {
					t.Errorf("x[%d]: got %g want %g", j, got[j], want[j])
				}
			})
		}
	}
}

func TestEmbedMatchesDequantize(t *testing.T) {
	b := newBackend(t, Config{Threads: 2, MaxLevel: LevelAVX512})
	for _, typ := range allTypes {
		t.Run(typ.String(), func(t *testing.T) {
			r := rand.New(rand.NewPCG(11, uint64(typ)))
			const vocab = 40
			cols := colsFor(typ, 2)
			data := randWeights(r, typ, vocab, cols)
			table, err := b.NewWeight(typ, vocab, cols, data)
			if err != nil {
				t.Fatal(err)
			}
			want := dequantRows(t, typ, data, vocab, cols)
			for _, n := range []int{1, 3, 17} {
				ids := make([]int32, n)
				for i := range ids {
					ids[i] = int32(r.IntN(vocab))
				}
				dst := b.NewTensor(n, cols)
				b.Embed(dst, table, ids)
				got := readAll(b, dst)
				for i, id := range ids {
					if !slices.Equal(got[i*cols:(i+1)*cols], want[int(id)*cols:(int(id)+1)*cols]) {
						t.Errorf("n=%d row %d (id %d) differs from quant.Dequantize", n, i, id)
					}
				}
			}
		})
	}
}

func TestGather(t *testing.T) {
	b := newBackend(t, Config{Threads: 2, MaxLevel: LevelAVX512})
	src := []float32{1, 2, 3, 4, 5, 6}
	dst := b.NewTensor(4, 2)
	b.Gather(dst, tensorOf(b, 3, 2, src), []int32{2, 0, 2, 1})
	if got, want := readAll(b, dst), []float32{5, 6, 1, 2, 5, 6, 3, 4}; !slices.Equal(got, want) {
		t.Errorf("Gather = %v, want %v", got, want)
	}
}

// TestShapeMisusePanics checks that programmer errors panic with a message
// instead of corrupting memory in C.
func TestShapeMisusePanics(t *testing.T) {
	b := newBackend(t, Config{Threads: 2, MaxLevel: LevelAVX512})
	w, err := b.NewWeight(quant.Q8_0, 4, 32, make([]byte, 4*34))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		fn   func()
	}{
		{"MatMul cols", func() { b.MatMul(b.NewTensor(1, 4), b.NewTensor(1, 64), w) }},
		{"MatMul dst", func() { b.MatMul(b.NewTensor(2, 4), b.NewTensor(1, 32), w) }},
		{"Embed id", func() { b.Embed(b.NewTensor(1, 32), w, []int32{4}) }},
		{"Embed negative", func() { b.Embed(b.NewTensor(1, 32), w, []int32{-1}) }},
		{"Gather row", func() { b.Gather(b.NewTensor(1, 2), b.NewTensor(2, 2), []int32{2}) }},
		{"Add shape", func() { b.Add(b.NewTensor(1, 2), b.NewTensor(2, 2)) }},
		{"RoPE dims", func() {
			b.RoPE(b.NewTensor(1, 8), []int32{0}, kernels.RoPEParams{Heads: 1, HeadDim: 8, Dims: 9, Base: 1e4})
		}},
		{"Write len", func() { b.Write(b.NewTensor(1, 2), []float32{1}) }},
		{"foreign tensor", func() { b.Add(ref.New().NewTensor(1, 1), b.NewTensor(1, 1)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", c.name)
				}
			}()
			c.fn()
		})
	}
}
