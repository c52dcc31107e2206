package cpu

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// Attention computes causal grouped-query attention of q against the paged
// cache of layer. Query rows not covered by any sequence are left unchanged.
func (b *Backend) Attention(dst, q kernels.Tensor, c kernels.KVCache, layer int, p kernels.AttnParams) {
	kc, region := b.kv(c, layer, "Attention")
	d, qq := b.ten(dst, "Attention"), b.ten(q, "Attention")
	s := kc.spec
	width := p.Heads * p.HeadDim
	if p.Heads <= 0 || p.KVHeads != s.KVHeads || p.HeadDim != s.HeadDim || p.Heads%p.KVHeads != 0 ||
		qq.cols != width || d.cols != width || d.rows != qq.rows {
		panic(fmt.Sprintf("cpu: Attention: q %dx%d, dst %dx%d, heads %d/%d x %d, cache %d x %d",
			qq.rows, qq.cols, d.rows, d.cols, p.Heads, p.KVHeads, p.HeadDim, s.KVHeads, s.HeadDim))
	}
	seqs := b.attSeqs[:0]
	blocks := b.attBlocks[:0]
	for i, sq := range p.Seqs {
		if err := checkSeq(sq, qq.rows, s); err != nil {
			panic(fmt.Sprintf("cpu: Attention: sequence %d: %v", i, err))
		}
		used := (sq.KVLen + s.BlockSize - 1) / s.BlockSize
		seqs = append(seqs, int32(sq.QueryStart), int32(sq.QueryLen), int32(sq.KVLen), int32(len(blocks)))
		blocks = append(blocks, sq.Blocks[:used]...)
	}
	if len(p.Seqs) == 0 {
		return
	}
	if len(blocks) == 0 {
		blocks = append(blocks, 0) // C wants a valid pointer
	}
	items := growI32(b.attItems, len(p.Seqs)+1)
	scratch := b.attScratch
	if n := b.cfg.Threads * attnScratch(s.BlockSize, s.HeadDim, p.Heads, p.KVHeads); len(scratch) < n {
		scratch = make([]float32, n)
	}
	b.attSeqs, b.attBlocks, b.attItems, b.attScratch = seqs, blocks, items, scratch
	cAttention(b.pool, b.kern, &attnCall{
		dst: d.data, q: qq.data, region: region,
		blockSize: s.BlockSize, kvHeads: s.KVHeads, headDim: s.HeadDim,
		dtype: int(s.DType), heads: p.Heads, scale: p.Scale,
		seqs: seqs, blocks: blocks, itemOff: items, scratch: scratch,
	})
}

// checkSeq validates one sequence against the query rows and the cache; the
// C kernel trusts every index it is given.
func checkSeq(sq kernels.AttnSeq, qrows int, s kernels.KVSpec) error {
	if sq.QueryStart < 0 || sq.QueryLen < 0 || sq.QueryStart > qrows-sq.QueryLen {
		return fmt.Errorf("query rows [%d, +%d) outside %d", sq.QueryStart, sq.QueryLen, qrows)
	}
	if sq.KVLen < sq.QueryLen || sq.KVLen > len(sq.Blocks)*s.BlockSize {
		return fmt.Errorf("KVLen %d with %d queries and %d blocks of %d", sq.KVLen, sq.QueryLen, len(sq.Blocks), s.BlockSize)
	}
	used := (sq.KVLen + s.BlockSize - 1) / s.BlockSize
	for j, blk := range sq.Blocks[:used] {
		if blk < 0 || int(blk) >= s.Blocks {
			return fmt.Errorf("block %d (table entry %d) outside %d blocks", blk, j, s.Blocks)
		}
	}
	return nil
}

func growI32(s []int32, n int) []int32 {
	if cap(s) < n {
		return make([]int32, n)
	}
	return s[:n]
}
