package cuda

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
)

// GPU tests compare every kernel with the pure-Go reference backend
// (kernels/ref). They run only when TANDEM_CUDA_TESTS=1, and then fail
// rather than skip when no GPU is usable, so a GPU job cannot pass by
// accident.

func gpuBackend(t testing.TB) *Backend {
	t.Helper()
	if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
		t.Skip("GPU test: set TANDEM_CUDA_TESTS=1 on a CUDA host")
	}
	b, err := New(Config{LibPath: os.Getenv("TANDEM_CUDA_LIB"), Activations: kernels.ActQ8})
	if err != nil {
		t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Err(); err != nil {
			t.Errorf("backend error: %v", err)
		}
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func randVals(rng *rand.Rand, n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64()) * scale
	}
	return v
}

// pair holds the same tensor on the GPU and on the reference backend.
type pair struct {
	g, r kernels.Tensor
}

func newPair(b *Backend, rb *ref.Backend, rows, cols int, vals []float32) pair {
	p := pair{b.NewTensor(rows, cols), rb.NewTensor(rows, cols)}
	if vals != nil {
		b.Write(p.g, vals)
		rb.Write(p.r, vals)
	}
	return p
}

// compare fails when any element differs by more than tol*(1+max|ref|).
func compare(t *testing.T, what string, b *Backend, rb *ref.Backend, p pair, tol float64) {
	t.Helper()
	n := p.g.Rows() * p.g.Cols()
	got, want := make([]float32, n), make([]float32, n)
	b.Read(got, p.g)
	rb.Read(want, p.r)
	if err := b.Err(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	var scale, worst float64
	for _, v := range want {
		scale = math.Max(scale, math.Abs(float64(v)))
	}
	at := -1
	for i := range got {
		d := math.Abs(float64(got[i] - want[i]))
		if d > worst || math.IsNaN(d) {
			worst, at = d, i
		}
	}
	if worst > tol*(1+scale) || math.IsNaN(worst) {
		t.Fatalf("%s: max difference %g at %d (got %g want %g), tolerance %g", what, worst, at, got[at], want[at], tol*(1+scale))
	}
}

func weightPair(t *testing.T, b *Backend, rb *ref.Backend, typ quant.Type, rows, cols int, rng *rand.Rand) (kernels.Weight, kernels.Weight) {
	t.Helper()
	data := make([]byte, typ.RowBytes(cols)*rows)
	if err := quant.Quantize(typ, randVals(rng, rows*cols, 1/float32(math.Sqrt(float64(cols)))), data); err != nil {
		t.Fatal(err)
	}
	gw, err := b.NewWeight(typ, rows, cols, data)
	if err != nil {
		t.Fatalf("NewWeight %v: %v", typ, err)
	}
	rw, err := rb.NewWeight(typ, rows, cols, data)
	if err != nil {
		t.Fatal(err)
	}
	return gw, rw
}

// matShape is a weight shape; K-quant rows hold whole 256-value blocks.
type matShape struct{ rows, cols int }

func TestGPUMatMulMatchesRef(t *testing.T) {
	b, rb := gpuBackend(t), ref.NewWith(kernels.ActQ8)
	rng := rand.New(rand.NewPCG(1, 2))
	legacy := []matShape{{64, 64}, {100, 96}, {33, 1056}, {7, 4096}}
	// 1, 3, 5 and 16 blocks a row: a warp takes four blocks a step, so
	// these cover partial and whole steps.
	kquant := []matShape{{64, 256}, {100, 768}, {33, 1280}, {7, 4096}}
	for _, tc := range []struct {
		typ    quant.Type
		shapes []matShape
	}{
		{quant.F32, legacy}, {quant.F16, legacy}, {quant.BF16, legacy},
		{quant.Q4_0, legacy}, {quant.Q4_1, legacy}, {quant.Q5_0, legacy}, {quant.Q5_1, legacy}, {quant.Q8_0, legacy},
		{quant.Q4_K, kquant}, {quant.Q5_K, kquant}, {quant.Q6_K, kquant},
	} {
		t.Run(tc.typ.String(), func(t *testing.T) {
			for _, s := range tc.shapes {
				gw, rw := weightPair(t, b, rb, tc.typ, s.rows, s.cols, rng)
				// 19 rows = 16 + 2 + 1: every token-group width but 8 and 4,
				// which 5 and 8 cover.
				for _, rows := range []int{1, 5, 8, 19} {
					xs := randVals(rng, rows*s.cols, 1)
					// A zero first block: activation scale 0.
					clear(xs[:min(256, s.cols)])
					x := newPair(b, rb, rows, s.cols, xs)
					d := newPair(b, rb, rows, s.rows, nil)
					b.MatMul(d.g, x.g, gw)
					rb.MatMul(d.r, x.r, rw)
					compare(t, fmt.Sprintf("%v %dx%d matmul, %d rows", tc.typ, s.rows, s.cols, rows), b, rb, d, 1e-4)
				}
			}
		})
	}
	// Widths that are not a multiple of 8 take the scalar float path.
	for _, typ := range []quant.Type{quant.F32, quant.F16, quant.BF16} {
		gw, rw := weightPair(t, b, rb, typ, 10, 13, rng)
		x := newPair(b, rb, 3, 13, randVals(rng, 3*13, 1))
		d := newPair(b, rb, 3, 10, nil)
		b.MatMul(d.g, x.g, gw)
		rb.MatMul(d.r, x.r, rw)
		compare(t, typ.String()+" scalar matmul", b, rb, d, 1e-5)
	}
}

// A row's product must not depend on the other rows of the batch.
func TestGPUMatMulBatchInvariant(t *testing.T) {
	b, rb := gpuBackend(t), ref.NewWith(kernels.ActQ8)
	rng := rand.New(rand.NewPCG(3, 4))
	const rows, cols, batch = 96, 512, 19
	for _, typ := range []quant.Type{quant.F16, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K} {
		gw, _ := weightPair(t, b, rb, typ, rows, cols, rng)
		xs := randVals(rng, batch*cols, 1)
		x, d := b.NewTensor(batch, cols), b.NewTensor(batch, rows)
		b.Write(x, xs)
		b.MatMul(d, x, gw)
		all := make([]float32, batch*rows)
		b.Read(all, d)
		x1, d1 := b.NewTensor(1, cols), b.NewTensor(1, rows)
		one := make([]float32, rows)
		for i := 0; i < batch; i++ {
			b.Write(x1, xs[i*cols:(i+1)*cols])
			b.MatMul(d1, x1, gw)
			b.Read(one, d1)
			for j, v := range one {
				if math.Float32bits(v) != math.Float32bits(all[i*rows+j]) {
					t.Fatalf("%v row %d col %d: alone %g, batched %g", typ, i, j, v, all[i*rows+j])
				}
			}
		}
	}
}

func TestGPUElementwiseMatchesRef(t *testing.T) {
	b, rb := gpuBackend(t), ref.NewWith(kernels.ActQ8)
	rng := rand.New(rand.NewPCG(5, 6))
	const rows, cols = 7, 384

	for _, tc := range []struct {
		typ   quant.Type
		width int
	}{
		{quant.F32, cols}, {quant.F16, cols}, {quant.BF16, cols},
		{quant.Q4_0, cols}, {quant.Q4_1, cols}, {quant.Q5_0, cols}, {quant.Q5_1, cols}, {quant.Q8_0, cols},
		{quant.Q4_K, 768}, {quant.Q5_K, 768}, {quant.Q6_K, 768},
	} {
		gw, rw := weightPair(t, b, rb, tc.typ, 50, tc.width, rng)
		ids := []int32{0, 49, 3, 3, 17}
		d := newPair(b, rb, len(ids), tc.width, nil)
		b.Embed(d.g, gw, ids)
		rb.Embed(d.r, rw, ids)
		compare(t, tc.typ.String()+" embed", b, rb, d, 1e-6)
	}

	nw := make([]byte, 4*cols)
	if err := quant.Quantize(quant.F32, randVals(rng, cols, 1), nw); err != nil {
		t.Fatal(err)
	}
	gn, _ := b.NewWeight(quant.F32, 1, cols, nw)
	rn, _ := rb.NewWeight(quant.F32, 1, cols, nw)
	x := newPair(b, rb, rows, cols, randVals(rng, rows*cols, 3))
	d := newPair(b, rb, rows, cols, nil)
	b.RMSNorm(d.g, x.g, gn, 1e-5)
	rb.RMSNorm(d.r, x.r, rn, 1e-5)
	compare(t, "rmsnorm", b, rb, d, 1e-5)

	for _, p := range []kernels.RoPEParams{
		{Heads: 6, HeadDim: 64, Dims: 64, Base: 100000, FreqScale: 1, Interleaved: true},
		{Heads: 3, HeadDim: 128, Dims: 128, Base: 500000, FreqScale: 1},
		{Heads: 4, HeadDim: 96, Dims: 32, Base: 10000, FreqScale: 0.25, Interleaved: true},
	} {
		pos := []int32{0, 1, 7, 100, 4095, 8191, 3}
		v := randVals(rng, len(pos)*p.Heads*p.HeadDim, 1)
		q := newPair(b, rb, len(pos), p.Heads*p.HeadDim, v)
		b.RoPE(q.g, pos, p)
		rb.RoPE(q.r, pos, p)
		compare(t, "rope", b, rb, q, 1e-5)
	}

	a := newPair(b, rb, rows, cols, randVals(rng, rows*cols, 1))
	y := newPair(b, rb, rows, cols, randVals(rng, rows*cols, 1))
	b.Add(a.g, y.g)
	rb.Add(a.r, y.r)
	compare(t, "add", b, rb, a, 0)

	g := newPair(b, rb, rows, cols, randVals(rng, rows*cols, 4))
	s := newPair(b, rb, rows, cols, nil)
	b.SwiGLU(s.g, g.g, y.g)
	rb.SwiGLU(s.r, g.r, y.r)
	compare(t, "swiglu", b, rb, s, 1e-6)

	sel := []int32{6, 0, 6, 2}
	gd := newPair(b, rb, len(sel), cols, nil)
	b.Gather(gd.g, a.g, sel)
	rb.Gather(gd.r, a.r, sel)
	compare(t, "gather", b, rb, gd, 0)
}

func TestGPUAttentionMatchesRef(t *testing.T) {
	b, rb := gpuBackend(t), ref.NewWith(kernels.ActQ8)
	for _, shape := range []struct {
		heads, kvHeads, headDim int
		dtype                   kernels.KVDType
	}{{6, 2, 64, kernels.KVF16}, {9, 3, 64, kernels.KVF16}, {8, 8, 128, kernels.KVF16}, {4, 1, 8, kernels.KVF16}, {2, 1, 256, kernels.KVF16},
		{6, 2, 64, kernels.KVInt8}, {4, 2, 6, kernels.KVInt8}, {8, 2, 128, kernels.KVInt8}} {
		rng := rand.New(rand.NewPCG(7, uint64(shape.headDim)))
		spec := kernels.KVSpec{Layers: 2, Blocks: 640, BlockSize: 4, KVHeads: shape.kvHeads, HeadDim: shape.headDim, DType: shape.dtype}
		gc, err := b.NewKVCache(spec)
		if err != nil {
			t.Fatal(err)
		}
		rc, _ := rb.NewKVCache(spec)
		perm := rng.Perm(spec.Blocks)
		next := 0
		table := func(n int) []int32 {
			var out []int32
			for i := 0; i < (n+spec.BlockSize-1)/spec.BlockSize; i++ {
				out = append(out, int32(perm[next]))
				next++
			}
			return out
		}
		// A 37-token prefill, a decode step at 50 keys, a 5-token chunk
		// after 10 cached tokens, and two batches long enough for the
		// key-range split (a decode step at 1100 keys, a 3-row chunk at 700),
		// in one batch.
		seqs := []kernels.AttnSeq{
			{QueryStart: 0, QueryLen: 37, KVLen: 37, Blocks: table(37)},
			{QueryStart: 37, QueryLen: 1, KVLen: 50, Blocks: table(50)},
			{QueryStart: 38, QueryLen: 5, KVLen: 15, Blocks: table(15)},
			{QueryStart: 43, QueryLen: 1, KVLen: 1100, Blocks: table(1100)},
			{QueryStart: 44, QueryLen: 3, KVLen: 700, Blocks: table(700)},
		}
		rowKV := spec.KVHeads * spec.HeadDim
		for _, s := range seqs {
			// Store every key of the sequence, cached ones included.
			slots := make([]int32, s.KVLen)
			for p := range slots {
				slots[p] = s.Blocks[p/spec.BlockSize]*int32(spec.BlockSize) + int32(p%spec.BlockSize)
			}
			k := newPair(b, rb, s.KVLen, rowKV, randVals(rng, s.KVLen*rowKV, 1))
			v := newPair(b, rb, s.KVLen, rowKV, randVals(rng, s.KVLen*rowKV, 1))
			b.StoreKV(gc, 1, k.g, v.g, slots)
			rb.StoreKV(rc, 1, k.r, v.r, slots)
		}
		const rows = 47
		cols := shape.heads * shape.headDim
		q := newPair(b, rb, rows, cols, randVals(rng, rows*cols, 1))
		d := newPair(b, rb, rows, cols, nil)
		p := kernels.AttnParams{Heads: shape.heads, KVHeads: shape.kvHeads, HeadDim: shape.headDim, Scale: 1 / float32(math.Sqrt(float64(shape.headDim))), Seqs: seqs}
		b.Attention(d.g, q.g, gc, 1, p)
		rb.Attention(d.r, q.r, rc, 1, p)
		compare(t, "attention "+shape.dtype.String(), b, rb, d, 2e-3)

		// Stored blocks are byte-identical to the reference encoding.
		gb, rbuf := make([]byte, spec.BlockBytes()), make([]byte, spec.BlockBytes())
		for _, blk := range seqs[1].Blocks {
			if err := gc.ReadBlock(1, int(blk), gb); err != nil {
				t.Fatal(err)
			}
			if err := rc.ReadBlock(1, int(blk), rbuf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gb, rbuf) {
				t.Fatalf("block %d differs from the reference encoding", blk)
			}
		}
		if err := gc.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGPUKVBlockIO(t *testing.T) {
	b := gpuBackend(t)
	spec := kernels.KVSpec{Layers: 3, Blocks: 5, BlockSize: 16, KVHeads: 2, HeadDim: 64}
	c, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	src := make([]byte, spec.BlockBytes())
	for i := range src {
		src[i] = byte(i * 7)
	}
	if err := c.WriteBlock(2, 4, src); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(src))
	if err := c.ReadBlock(2, 4, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, src) {
		t.Fatal("block read back differs")
	}
	for _, bad := range []struct{ layer, block, n int }{{3, 0, len(src)}, {0, 5, len(src)}, {-1, 0, len(src)}, {0, 0, len(src) - 1}} {
		if err := c.ReadBlock(bad.layer, bad.block, make([]byte, bad.n)); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ReadBlock(%d, %d, %d bytes) = %v, want ErrInvalidArgument", bad.layer, bad.block, bad.n, err)
		}
	}
}

// Bad indices are recorded as errors, never launched.
func TestGPUBadIndicesRecorded(t *testing.T) {
	b, rb := gpuBackend(t), ref.NewWith(kernels.ActQ8)
	rng := rand.New(rand.NewPCG(8, 9))
	gw, _ := weightPair(t, b, rb, quant.Q8_0, 10, 64, rng)
	d := b.NewTensor(1, 64)
	b.Embed(d, gw, []int32{10})
	if err := b.Err(); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("Err after out-of-range id = %v, want ErrInvalidArgument", err)
	}
	b.err = nil // the test owns the backend; clear for the cleanup check
	for _, tc := range []struct {
		name       string
		typ        quant.Type
		rows, cols int
		bytes      int
		want       error
	}{
		{"Q3_K weight", quant.Q3_K, 1, 256, 110, ErrUnsupported},
		{"Q8_1 weight", quant.Q8_1, 1, 32, 36, ErrUnsupported},
		{"short Q5_1 weight", quant.Q5_1, 2, 64, 95, ErrInvalidArgument},
		{"partial Q5_0 block", quant.Q5_0, 1, 48, 33, ErrInvalidArgument},
		{"Q2_K weight", quant.Q2_K, 1, 256, 84, ErrUnsupported},
		{"short weight", quant.Q4_1, 2, 64, 79, ErrInvalidArgument},
		{"short K-quant weight", quant.Q6_K, 2, 256, 419, ErrInvalidArgument},
		{"partial K-quant block", quant.Q4_K, 1, 128, 72, ErrInvalidArgument},
	} {
		if _, err := b.NewWeight(tc.typ, tc.rows, tc.cols, make([]byte, tc.bytes)); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// The backend says once, at Info, that it rounds activations to 8 bits when
// f32 activations were asked for, and nothing when q8 was.
func TestGPUActivationsLogged(t *testing.T) {
	if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
		t.Skip("GPU test: set TANDEM_CUDA_TESTS=1 on a CUDA host")
	}
	for _, tc := range []struct {
		act  kernels.Activations
		want int
	}{{kernels.ActF32, 1}, {kernels.ActQ8, 0}} {
		t.Run(tc.act.String(), func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
			b, err := New(Config{LibPath: os.Getenv("TANDEM_CUDA_LIB"), Logger: log, Activations: tc.act})
			if err != nil {
				t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			got := 0
			for _, line := range strings.Split(buf.String(), "\n") {
				if strings.Contains(line, "level=INFO") && strings.Contains(line, "8-bit activations") {
					got++
				}
			}
			if got != tc.want {
				t.Fatalf("%d Info lines about 8-bit activations, want %d; log:\n%s", got, tc.want, buf.String())
			}
		})
	}
}

// Dropped tensors return their memory to the pool for reuse, zeroed.
func TestGPUTensorMemoryReused(t *testing.T) {
	b := gpuBackend(t)
	ones := make([]float32, 64*1024)
	for i := range ones {
		ones[i] = 1
	}
	for i := 0; i < 200; i++ {
		b.Write(b.NewTensor(64, 1024), ones)
		if i%20 == 19 {
			runtime.GC()
			waitForRecycled(t, b)
		}
	}
	b.mem.mu.Lock()
	live := len(b.mem.all)
	b.mem.mu.Unlock()
	if live > 40 {
		t.Fatalf("%d live allocations after 200 dropped tensors: memory is not reused", live)
	}
	x := b.NewTensor(64, 1024)
	got := make([]float32, 64*1024)
	b.Read(got, x)
	for i, v := range got {
		if v != 0 {
			t.Fatalf("reused tensor element %d = %g, want 0", i, v)
		}
	}
}

// waitForRecycled waits for the cleanups of collected tensors, which run on
// their own goroutine after a GC.
func waitForRecycled(t *testing.T, b *Backend) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		b.mem.mu.Lock()
		n := len(b.mem.free[64*1024*4])
		b.mem.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("no tensor memory recycled within a second of a GC")
}

// Attention of a sequence is bit-identical alone or batched with others,
// with or without the key-range split.
func TestGPUAttentionBatchInvariant(t *testing.T) {
	b := gpuBackend(t)
	rng := rand.New(rand.NewPCG(10, 11))
	const heads, kvHeads, hd = 8, 2, 64
	spec := kernels.KVSpec{Layers: 1, Blocks: 400, BlockSize: 8, KVHeads: kvHeads, HeadDim: hd}
	c, err := b.NewKVCache(spec)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lens := []struct{ q, kv int }{{20, 20}, {1, 900}, {1, 33}, {3, 1500}}
	var seqs []kernels.AttnSeq
	next, rows := 0, 0
	for _, l := range lens {
		s := kernels.AttnSeq{QueryStart: rows, QueryLen: l.q, KVLen: l.kv}
		for i := 0; i < (l.kv+spec.BlockSize-1)/spec.BlockSize; i++ {
			s.Blocks = append(s.Blocks, int32(next))
			next++
		}
		slots := make([]int32, l.kv)
		for p := range slots {
			slots[p] = s.Blocks[p/spec.BlockSize]*int32(spec.BlockSize) + int32(p%spec.BlockSize)
		}
		k, v := b.NewTensor(l.kv, kvHeads*hd), b.NewTensor(l.kv, kvHeads*hd)
		b.Write(k, randVals(rng, l.kv*kvHeads*hd, 1))
		b.Write(v, randVals(rng, l.kv*kvHeads*hd, 1))
		b.StoreKV(c, 0, k, v, slots)
		seqs = append(seqs, s)
		rows += l.q
	}
	qv := randVals(rng, rows*heads*hd, 1)
	q, d := b.NewTensor(rows, heads*hd), b.NewTensor(rows, heads*hd)
	b.Write(q, qv)
	p := kernels.AttnParams{Heads: heads, KVHeads: kvHeads, HeadDim: hd, Scale: 0.125, Seqs: seqs}
	b.Attention(d, q, c, 0, p)
	all := make([]float32, rows*heads*hd)
	b.Read(all, d)
	w := heads * hd
	for _, s := range seqs {
		q1, d1 := b.NewTensor(s.QueryLen, w), b.NewTensor(s.QueryLen, w)
		b.Write(q1, qv[s.QueryStart*w:(s.QueryStart+s.QueryLen)*w])
		alone := s
		alone.QueryStart = 0
		p1 := p
		p1.Seqs = []kernels.AttnSeq{alone}
		b.Attention(d1, q1, c, 0, p1)
		got := make([]float32, s.QueryLen*w)
		b.Read(got, d1)
		for i, v := range got {
			if math.Float32bits(v) != math.Float32bits(all[s.QueryStart*w+i]) {
				t.Fatalf("sequence with %d keys, element %d: alone %g, batched %g", s.KVLen, i, v, all[s.QueryStart*w+i])
			}
		}
	}
}
