package cuda

import (
	"fmt"
	"unsafe"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// unsafePointer returns the address of s's first element for a copy that
// completes before the call returns; s must not be empty.
func unsafePointer(s []float32) unsafe.Pointer { return unsafe.Pointer(&s[0]) }

// live reports whether every tensor has memory; a tensor without memory
// comes from a failed allocation whose error is already recorded.
func (b *Backend) live(ts ...*Tensor) bool {
	if !b.ready() {
		return false
	}
	for _, t := range ts {
		if t.ptr == 0 && t.rows*t.cols > 0 {
			return !b.fail(fmt.Errorf("%w: tensor has no device memory", ErrInvalidArgument))
		}
	}
	return true
}

func (b *Backend) liveWeight(w *Weight) bool {
	if w.ptr == 0 {
		return !b.fail(fmt.Errorf("%w: weight used after Close", ErrClosed))
	}
	return true
}

// Embed implements kernels.Backend. Out-of-range ids are recorded as
// ErrInvalidArgument and nothing is launched.
func (b *Backend) Embed(dst kernels.Tensor, table kernels.Weight, ids []int32) {
	d, w := b.tensor(dst, "Embed"), b.weight(table, "Embed")
	mustShape(d.rows == len(ids) && d.cols == w.cols, "Embed", d)
	if len(ids) == 0 || !b.live(d) || !b.liveWeight(w) {
		return
	}
	for _, id := range ids {
		if id < 0 || int(id) >= w.rows {
			b.fail(fmt.Errorf("%w: token id %d outside [0, %d)", ErrInvalidArgument, id, w.rows))
			return
		}
	}
	b.fail(b.lib.embed(b.ctx, d.ptr, w.ptr, int(w.typ), w.rows, w.cols, ids))
}

// RMSNorm implements kernels.Backend; w must be an F32 vector.
func (b *Backend) RMSNorm(dst, x kernels.Tensor, w kernels.Weight, eps float32) {
	d, xt, wt := b.tensor(dst, "RMSNorm"), b.tensor(x, "RMSNorm"), b.weight(w, "RMSNorm")
	mustShape(d.rows == xt.rows && d.cols == xt.cols && wt.cols == xt.cols && wt.rows == 1, "RMSNorm", d)
	if xt.rows == 0 || !b.live(d, xt) || !b.liveWeight(wt) {
		return
	}
	if wt.typ != quant.F32 {
		b.fail(fmt.Errorf("%w: RMSNorm weight of type %v (want F32)", ErrUnsupported, wt.typ))
		return
	}
	b.fail(b.lib.rmsnorm(b.ctx, d.ptr, xt.ptr, wt.ptr, xt.rows, xt.cols, eps))
}

// MatMul implements kernels.Backend.
func (b *Backend) MatMul(dst, x kernels.Tensor, w kernels.Weight) {
	d, xt, wt := b.tensor(dst, "MatMul"), b.tensor(x, "MatMul"), b.weight(w, "MatMul")
	mustShape(d.rows == xt.rows && d.cols == wt.rows && xt.cols == wt.cols, "MatMul", d)
	if xt.rows == 0 || !b.live(d, xt) || !b.liveWeight(wt) {
		return
	}
	b.fail(b.lib.matmul(b.ctx, d.ptr, xt.ptr, xt.rows, wt.ptr, int(wt.typ), wt.rows, wt.cols))
}

// RoPE implements kernels.Backend.
func (b *Backend) RoPE(x kernels.Tensor, pos []int32, p kernels.RoPEParams) {
	xt := b.tensor(x, "RoPE")
	mustShape(xt.rows == len(pos) && xt.cols == p.Heads*p.HeadDim && p.Dims <= p.HeadDim && p.Dims%2 == 0 && p.Dims > 0, "RoPE", xt)
	if len(pos) == 0 || !b.live(xt) {
		return
	}
	b.fail(b.lib.rope(b.ctx, xt.ptr, pos, p.Heads, p.HeadDim, p.Dims, p.Base, p.FreqScale, p.Interleaved))
}

// Add implements kernels.Backend.
func (b *Backend) Add(dst, x kernels.Tensor) {
	d, xt := b.tensor(dst, "Add"), b.tensor(x, "Add")
	mustShape(d.rows == xt.rows && d.cols == xt.cols, "Add", d)
	if d.rows*d.cols == 0 || !b.live(d, xt) {
		return
	}
	b.fail(b.lib.add(b.ctx, d.ptr, xt.ptr, d.rows*d.cols))
}

// SwiGLU implements kernels.Backend.
func (b *Backend) SwiGLU(dst, gate, up kernels.Tensor) {
	d, g, u := b.tensor(dst, "SwiGLU"), b.tensor(gate, "SwiGLU"), b.tensor(up, "SwiGLU")
	n := d.rows * d.cols
	mustShape(n == g.rows*g.cols && n == u.rows*u.cols, "SwiGLU", d)
	if n == 0 || !b.live(d, g, u) {
		return
	}
	b.fail(b.lib.swiglu(b.ctx, d.ptr, g.ptr, u.ptr, n))
}

// Gather implements kernels.Backend.
func (b *Backend) Gather(dst, src kernels.Tensor, rows []int32) {
	d, s := b.tensor(dst, "Gather"), b.tensor(src, "Gather")
	mustShape(d.rows == len(rows) && d.cols == s.cols, "Gather", d)
	if len(rows) == 0 || !b.live(d, s) {
		return
	}
	for _, r := range rows {
		if r < 0 || int(r) >= s.rows {
			b.fail(fmt.Errorf("%w: gather row %d outside [0, %d)", ErrInvalidArgument, r, s.rows))
			return
		}
	}
	b.fail(b.lib.gather(b.ctx, d.ptr, s.ptr, s.cols, rows))
}

// StoreKV implements kernels.Backend.
func (b *Backend) StoreKV(c kernels.KVCache, layer int, k, v kernels.Tensor, slots []int32) {
	kc := b.cache(c, "StoreKV")
	kt, vt := b.tensor(k, "StoreKV"), b.tensor(v, "StoreKV")
	s := kc.spec
	row := s.KVHeads * s.HeadDim
	mustShape(kt.rows == len(slots) && vt.rows == len(slots) && kt.cols == row && vt.cols == row, "StoreKV", kt)
	if len(slots) == 0 || !b.live(kt, vt) || !b.liveCache(kc, layer) {
		return
	}
	max := s.Blocks * s.BlockSize
	for _, sl := range slots {
		if sl < 0 || int(sl) >= max {
			b.fail(fmt.Errorf("%w: KV slot %d outside [0, %d)", ErrInvalidArgument, sl, max))
			return
		}
	}
	b.fail(b.lib.storeKV(b.ctx, kc.layers[layer], s.DType, s.BlockSize, s.KVHeads, s.HeadDim, kt.ptr, vt.ptr, slots))
}

// Attention implements kernels.Backend.
func (b *Backend) Attention(dst, q kernels.Tensor, c kernels.KVCache, layer int, p kernels.AttnParams) {
	kc := b.cache(c, "Attention")
	d, qt := b.tensor(dst, "Attention"), b.tensor(q, "Attention")
	mustShape(qt.cols == p.Heads*p.HeadDim && d.cols == qt.cols && d.rows == qt.rows &&
		p.KVHeads > 0 && p.Heads%p.KVHeads == 0 && p.KVHeads == kc.spec.KVHeads && p.HeadDim == kc.spec.HeadDim, "Attention", qt)
	if qt.rows == 0 || !b.live(d, qt) || !b.liveCache(kc, layer) {
		return
	}
	work, staged, err := b.attn.lookup(p, qt.rows, kc.spec)
	if b.fail(err) || len(work.tasks) == 0 {
		return
	}
	err = b.lib.attention(b.ctx, d.ptr, qt.ptr, kc.layers[layer], kc.spec.DType, kc.spec.BlockSize, p.Heads, p.KVHeads,
		p.HeadDim, p.Scale, work, staged)
	if err != nil {
		b.attn.invalidate()
	}
	b.fail(err)
}
