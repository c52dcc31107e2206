package comm

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/cuda"
	"github.com/tandemserve/tandem/kernels/quant"
	"github.com/tandemserve/tandem/kernels/ref"
)

// The tests below run one Llama layer Megatron-style over N ranks and check
// that it computes what the unsplit layer computes. They are the recipe
// model/llama follows: rank r keeps query heads [r*H/N, (r+1)*H/N), KV heads
// [r*KV/N, (r+1)*KV/N) (its KV cache holds only those), the matching columns
// of the attention output matrix, rows [r*FF/N, (r+1)*FF/N) of gate and up,
// and those columns of down; one AllReduceSum after the attention output
// projection and one after the down projection make every rank's residual
// stream whole again.

type layerDims struct{ embd, heads, kvHeads, headDim, ff int }

// layerWeights is one layer in ggml encoding.
type layerWeights struct {
	typ                     quant.Type
	attnNorm, ffnNorm       []byte
	wq, wk, wv, wo          []byte
	gate, up, down          []byte
	qRows, kvRows, ffRows   int
	embd, attnCols, ffnCols int
}

func randomLayer(d layerDims, typ quant.Type, seed uint64) *layerWeights {
	rng := rand.New(rand.NewPCG(seed, 99))
	mat := func(rows, cols int) []byte {
		v := make([]float32, rows*cols)
		for i := range v {
			v[i] = float32(rng.NormFloat64()) / float32(math.Sqrt(float64(cols)))
		}
		out := make([]byte, typ.RowBytes(cols)*rows)
		if err := quant.Quantize(typ, v, out); err != nil {
			panic(err)
		}
		return out
	}
	norm := func(n int) []byte {
		v := make([]float32, n)
		for i := range v {
			v[i] = 1 + 0.1*float32(rng.NormFloat64())
		}
		out := make([]byte, 4*n)
		if err := quant.Quantize(quant.F32, v, out); err != nil {
			panic(err)
		}
		return out
	}
	q, kv := d.heads*d.headDim, d.kvHeads*d.headDim
	return &layerWeights{
		typ: typ, attnNorm: norm(d.embd), ffnNorm: norm(d.embd),
		wq: mat(q, d.embd), wk: mat(kv, d.embd), wv: mat(kv, d.embd), wo: mat(d.embd, q),
		gate: mat(d.ff, d.embd), up: mat(d.ff, d.embd), down: mat(d.embd, d.ff),
		qRows: q, kvRows: kv, ffRows: d.ff, embd: d.embd, attnCols: q, ffnCols: d.ff,
	}
}

// rowsOf returns rows [r0, r1) of a matrix with cols columns.
func rowsOf(typ quant.Type, data []byte, cols, r0, r1 int) []byte {
	rb := typ.RowBytes(cols)
	return data[r0*rb : r1*rb]
}

// colsOf returns columns [c0, c1) of every row; c0 and c1 must be block
// boundaries of typ.
func colsOf(typ quant.Type, data []byte, rows, cols, c0, c1 int) []byte {
	rb := typ.RowBytes(cols)
	var out []byte
	for r := 0; r < rows; r++ {
		row := data[r*rb : (r+1)*rb]
		out = append(out, row[typ.RowBytes(c0):typ.RowBytes(c1)]...)
	}
	return out
}

// shard is rank r of n's part of a layer, bound to its backend.
type shard struct {
	be                kernels.Backend
	d                 layerDims // heads, kvHeads and ff are this rank's
	attnNorm, ffnNorm kernels.Weight
	wq, wk, wv, wo    kernels.Weight
	gate, up, down    kernels.Weight
	cache             kernels.KVCache
}

func newShard(t *testing.T, be kernels.Backend, w *layerWeights, full layerDims, r, n int) *shard {
	t.Helper()
	d := layerDims{embd: full.embd, heads: full.heads / n, kvHeads: full.kvHeads / n, headDim: full.headDim, ff: full.ff / n}
	q0, q1 := r*d.heads*d.headDim, (r+1)*d.heads*d.headDim
	k0, k1 := r*d.kvHeads*d.headDim, (r+1)*d.kvHeads*d.headDim
	f0, f1 := r*d.ff, (r+1)*d.ff
	mk := func(typ quant.Type, rows, cols int, data []byte) kernels.Weight {
		wt, err := be.NewWeight(typ, rows, cols, data)
		if err != nil {
			t.Fatal(err)
		}
		return wt
	}
	s := &shard{be: be, d: d}
	s.attnNorm = mk(quant.F32, 1, d.embd, w.attnNorm)
	s.ffnNorm = mk(quant.F32, 1, d.embd, w.ffnNorm)
	s.wq = mk(w.typ, q1-q0, d.embd, rowsOf(w.typ, w.wq, d.embd, q0, q1))
	s.wk = mk(w.typ, k1-k0, d.embd, rowsOf(w.typ, w.wk, d.embd, k0, k1))
	s.wv = mk(w.typ, k1-k0, d.embd, rowsOf(w.typ, w.wv, d.embd, k0, k1))
	s.wo = mk(w.typ, d.embd, q1-q0, colsOf(w.typ, w.wo, d.embd, w.attnCols, q0, q1))
	s.gate = mk(w.typ, f1-f0, d.embd, rowsOf(w.typ, w.gate, d.embd, f0, f1))
	s.up = mk(w.typ, f1-f0, d.embd, rowsOf(w.typ, w.up, d.embd, f0, f1))
	s.down = mk(w.typ, d.embd, f1-f0, colsOf(w.typ, w.down, d.embd, w.ffnCols, f0, f1))
	c, err := be.NewKVCache(kernels.KVSpec{Layers: 1, Blocks: 8, BlockSize: 4, KVHeads: d.kvHeads, HeadDim: d.headDim})
	if err != nil {
		t.Fatal(err)
	}
	s.cache = c
	return s
}

// step runs the layer over the new tokens [done, len) of one sequence whose
// residual rows are xs, in place.
func (s *shard) step(ctx context.Context, c Communicator, xs []float32, done, total int) error {
	be, d := s.be, s.d
	n := total - done
	pos, slots := make([]int32, n), make([]int32, n)
	blocks := []int32{7, 2, 5, 0, 1, 3, 4, 6}
	for i := range pos {
		p := done + i
		pos[i], slots[i] = int32(p), blocks[p/4]*4+int32(p%4)
	}
	x := be.NewTensor(n, d.embd)
	be.Write(x, xs)
	xn := be.NewTensor(n, d.embd)
	q, k, v := be.NewTensor(n, d.heads*d.headDim), be.NewTensor(n, d.kvHeads*d.headDim), be.NewTensor(n, d.kvHeads*d.headDim)
	attn, proj := be.NewTensor(n, d.heads*d.headDim), be.NewTensor(n, d.embd)
	rope := kernels.RoPEParams{HeadDim: d.headDim, Dims: d.headDim, Base: 10000, FreqScale: 1, Interleaved: true}
	qr, kr := rope, rope
	qr.Heads, kr.Heads = d.heads, d.kvHeads

	be.RMSNorm(xn, x, s.attnNorm, 1e-5)
	be.MatMul(q, xn, s.wq)
	be.MatMul(k, xn, s.wk)
	be.MatMul(v, xn, s.wv)
	be.RoPE(q, pos, qr)
	be.RoPE(k, pos, kr)
	be.StoreKV(s.cache, 0, k, v, slots)
	be.Attention(attn, q, s.cache, 0, kernels.AttnParams{Heads: d.heads, KVHeads: d.kvHeads, HeadDim: d.headDim,
		Scale: 1 / float32(math.Sqrt(float64(d.headDim))), Seqs: []kernels.AttnSeq{{QueryLen: n, KVLen: total, Blocks: blocks}}})
	be.MatMul(proj, attn, s.wo)
	if err := c.AllReduceSum(ctx, proj); err != nil { // all-reduce 1: attention
		return err
	}
	be.Add(x, proj)

	gate, up, hid := be.NewTensor(n, d.ff), be.NewTensor(n, d.ff), be.NewTensor(n, d.ff)
	be.RMSNorm(xn, x, s.ffnNorm, 1e-5)
	be.MatMul(gate, xn, s.gate)
	be.MatMul(up, xn, s.up)
	be.SwiGLU(hid, gate, up)
	be.MatMul(proj, hid, s.down)
	if err := c.AllReduceSum(ctx, proj); err != nil { // all-reduce 2: MLP
		return err
	}
	be.Add(x, proj)
	be.Read(xs, x)
	return nil
}

// runTP runs a 6-token prefill and two decode steps over the given ranks and
// returns the final residual rows of every step, as rank 0 sees them.
func runTP(t *testing.T, bes []kernels.Backend, ranks []Communicator, w *layerWeights, d layerDims) []float32 {
	t.Helper()
	n := len(bes)
	shards := make([]*shard, n)
	for r := range shards {
		shards[r] = newShard(t, bes[r], w, d, r, n)
	}
	rng := rand.New(rand.NewPCG(5, 5))
	input := make([]float32, 8*d.embd)
	for i := range input {
		input[i] = float32(rng.NormFloat64())
	}
	outs := make([][]float32, n)
	errs := runRanks(ranks, func(c Communicator) error {
		r := c.Rank()
		for _, st := range [][2]int{{0, 6}, {6, 7}, {7, 8}} {
			xs := append([]float32(nil), input[st[0]*d.embd:st[1]*d.embd]...)
			if err := shards[r].step(context.Background(), c, xs, st[0], st[1]); err != nil {
				return err
			}
			outs[r] = append(outs[r], xs...)
		}
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	for r := 1; r < n; r++ {
		for i := range outs[0] {
			if math.Float32bits(outs[r][i]) != math.Float32bits(outs[0][i]) {
				t.Fatalf("rank %d disagrees with rank 0 at %d: %g vs %g", r, i, outs[r][i], outs[0][i])
			}
		}
	}
	for _, c := range ranks {
		c.Close()
	}
	return outs[0]
}

// backends returns n backends: CUDA ones (all on GPU 0, as several ranks on
// one GPU) when TANDEM_CUDA_TESTS=1, else the reference.
func backends(t *testing.T, n int) []kernels.Backend {
	t.Helper()
	out := make([]kernels.Backend, n)
	for i := range out {
		if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
			out[i] = ref.New()
			continue
		}
		b, err := cuda.New(cuda.Config{LibPath: os.Getenv("TANDEM_CUDA_LIB")})
		if err != nil {
			t.Fatalf("TANDEM_CUDA_TESTS=1 but no usable GPU: %v", err)
		}
		t.Cleanup(func() { b.Close() })
		out[i] = b
	}
	return out
}

func TestTensorParallelLayerMatchesTP1(t *testing.T) {
	d := layerDims{embd: 64, heads: 4, kvHeads: 2, headDim: 16, ff: 128}
	for _, typ := range []quant.Type{quant.F32, quant.Q8_0, quant.Q4_1} {
		w := randomLayer(d, typ, 3)
		one := backends(t, 1)
		r1, _ := NewGroup(one)
		want := runTP(t, one, r1, w, d)
		for _, n := range []int{2} {
			bes := backends(t, n)
			ranks, err := NewGroup(bes)
			if err != nil {
				t.Fatal(err)
			}
			got := runTP(t, bes, ranks, w, d)
			var worst float64
			for i := range want {
				worst = math.Max(worst, math.Abs(float64(got[i]-want[i])))
			}
			// Only the order of float additions differs between the split
			// and the whole layer.
			if worst > 1e-4 {
				t.Fatalf("%v TP=%d differs from TP=1 by %g", typ, n, worst)
			}
			t.Logf("%v TP=%d vs TP=1: max difference %g", typ, n, worst)
		}
	}
}

// TestNCCLTensorParallel runs the same split across two GPUs over NCCL.
func TestNCCLTensorParallel(t *testing.T) {
	if os.Getenv("TANDEM_CUDA_TESTS") != "1" {
		t.Skip("GPU test: set TANDEM_CUDA_TESTS=1 on a CUDA host")
	}
	devs, err := cuda.Devices(os.Getenv("TANDEM_CUDA_LIB"))
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) < 2 {
		t.Skipf("NCCL test needs 2 GPUs, found %d", len(devs))
	}
	d := layerDims{embd: 64, heads: 4, kvHeads: 2, headDim: 16, ff: 128}
	w := randomLayer(d, quant.Q8_0, 3)
	one := backends(t, 1)
	r1, _ := NewGroup(one)
	want := runTP(t, one, r1, w, d)
	cbs := make([]*cuda.Backend, 2)
	bes := make([]kernels.Backend, 2)
	for i := range cbs {
		b, err := cuda.New(cuda.Config{LibPath: os.Getenv("TANDEM_CUDA_LIB"), Device: i})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		cbs[i], bes[i] = b, b
	}
	ranks, err := NewNCCL(cbs)
	if err != nil {
		t.Fatal(err)
	}
	got := runTP(t, bes, ranks, w, d)
	for i := range want {
		if d := math.Abs(float64(got[i] - want[i])); d > 1e-4 {
			t.Fatalf("NCCL TP=2 differs from TP=1 by %g at %d", d, i)
		}
	}
}
