package cuda

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// Work-list geometry, mirrored from tandem_cuda.h.
const (
	// taskInts is the size of one tc_attn_task in int32s: query row, query
	// head, key range end, block-table offset, key range begin, partial
	// slot (-1: write the output directly), two reserved.
	taskInts = 8
	// combineInts is the size of one tc_attn_combine: query row, query
	// head, first partial slot, number of partials.
	combineInts = 4
	// attnWarps is TC_ATTN_WARPS: tasks per thread block.
	attnWarps = 4
	// splitKeys is the key-range length of one split task: a multiple of
	// the 32-key tile.
	splitKeys = 512
	// splitMaxRows is the largest query count of a sequence whose keys are
	// split. Decode steps (one row) and short speculative chunks have few
	// rows to spread over the GPU; long prefills have plenty and need no
	// partial buffers.
	splitMaxRows = 4
)

// attnWork is the device work of one attention call. Its slices are reused
// from call to call (build), so a steady decode loop does not allocate.
type attnWork struct {
	tasks   []int32 // taskInts per task, whole thread blocks of attnWarps
	tables  []int32 // the sequences' block tables, concatenated
	combine []int32 // combineInts per split (query row, head)
	parts   int     // partial results the split tasks write
	base    []int   // build's scratch: first partial slot per (row, head)
}

// attentionTasks turns an attention call into the kernels' work list, after
// checking every index the kernels will follow, so a malformed batch is an
// error instead of a stray device read.
//
// For each sequence and KV head, the (query row, query head) pairs of the
// heads sharing that KV head are listed row by row and cut into groups of
// attnWarps; a group shares its key tiles in shared memory, so a decode row
// puts a whole GQA group in one thread block.
//
// Sequences with at most splitMaxRows queries and more than splitKeys keys
// are also split by key range (flash-decoding): chunk c covers keys
// [c*splitKeys, (c+1)*splitKeys) and writes a partial (max, sum, output);
// a combine pass folds a query's partials in chunk order. The split depends
// only on the sequence's own shape, so results stay independent of the other
// sequences in the batch.
func attentionTasks(p kernels.AttnParams, qRows int, spec kernels.KVSpec) (attnWork, error) {
	var w attnWork
	if err := w.build(p, qRows, spec); err != nil {
		return attnWork{}, err
	}
	w.base = nil
	return w, nil
}

// build refills w with the work of p, reusing w's slices.
func (w *attnWork) build(p kernels.AttnParams, qRows int, spec kernels.KVSpec) error {
	w.tasks, w.tables, w.combine, w.parts = w.tasks[:0], w.tables[:0], w.combine[:0], 0
	group := p.Heads / p.KVHeads
	for i, s := range p.Seqs {
		switch {
		case s.QueryLen < 0 || s.QueryStart < 0 || s.QueryStart+s.QueryLen > qRows:
			return fmt.Errorf("%w: sequence %d query rows [%d, %d) outside [0, %d)", ErrInvalidArgument, i, s.QueryStart, s.QueryStart+s.QueryLen, qRows)
		case s.KVLen < s.QueryLen:
			return fmt.Errorf("%w: sequence %d has %d queries but %d keys", ErrInvalidArgument, i, s.QueryLen, s.KVLen)
		case s.KVLen > len(s.Blocks)*spec.BlockSize:
			return fmt.Errorf("%w: sequence %d has %d keys but %d blocks of %d", ErrInvalidArgument, i, s.KVLen, len(s.Blocks), spec.BlockSize)
		}
		if s.QueryLen == 0 {
			continue
		}
		used := (s.KVLen + spec.BlockSize - 1) / spec.BlockSize
		for _, blk := range s.Blocks[:used] {
			if blk < 0 || int(blk) >= spec.Blocks {
				return fmt.Errorf("%w: sequence %d block %d outside [0, %d)", ErrInvalidArgument, i, blk, spec.Blocks)
			}
		}
		off := int32(len(w.tables))
		w.tables = append(w.tables, s.Blocks[:used]...)
		keys := func(r int) int { return s.KVLen - s.QueryLen + r + 1 }
		chunks := 1
		if s.QueryLen <= splitMaxRows && s.KVLen > splitKeys {
			chunks = (s.KVLen + splitKeys - 1) / splitKeys
		}
		for kvh := 0; kvh < p.KVHeads; kvh++ {
			// Partial slots of each (row, head): consecutive, one per chunk
			// the row's keys reach; -1 when the row has a single chunk.
			if cap(w.base) < s.QueryLen*group {
				w.base = make([]int, s.QueryLen*group)
			}
			base := w.base[:s.QueryLen*group]
			for r := 0; r < s.QueryLen; r++ {
				n := (keys(r) + splitKeys - 1) / splitKeys
				for g := 0; g < group; g++ {
					base[r*group+g] = -1
					if chunks > 1 && n > 1 {
						base[r*group+g] = w.parts
						w.combine = append(w.combine, int32(s.QueryStart+r), int32(kvh*group+g), int32(w.parts), int32(n))
						w.parts += n
					}
				}
			}
			for c := 0; c < chunks; c++ {
				begin := c * splitKeys
				n := 0
				for r := 0; r < s.QueryLen; r++ {
					if keys(r) <= begin {
						continue // this row's keys end before the chunk
					}
					end := keys(r)
					if chunks > 1 {
						end = min(end, begin+splitKeys)
					}
					for g := 0; g < group; g++ {
						part := int32(-1)
						if b := base[r*group+g]; b >= 0 {
							part = int32(b + c)
						}
						w.tasks = append(w.tasks, int32(s.QueryStart+r), int32(kvh*group+g), int32(end), off, int32(begin), part, 0, 0)
						n++
					}
				}
				for ; n%attnWarps != 0; n++ {
					w.tasks = append(w.tasks, -1, 0, 0, 0, 0, -1, 0, 0)
				}
			}
		}
	}
	return nil
}

// attnCache remembers the last attention call's shape and work. A model
// calls Attention once per layer with the same sequences, so every layer
// after the first reuses the work list, and the copy of it already on the
// device, instead of rebuilding and uploading it.
type attnCache struct {
	valid                          bool
	heads, kvHeads, headDim, qRows int
	spec                           kernels.KVSpec
	seqs                           []kernels.AttnSeq // Blocks alias blocks
	blocks                         []int32
	work                           attnWork
}

// lookup returns the work of p and whether it is the work of the previous
// call (then already staged on the device).
func (c *attnCache) lookup(p kernels.AttnParams, qRows int, spec kernels.KVSpec) (*attnWork, bool, error) {
	if c.valid && c.matches(p, qRows, spec) {
		return &c.work, true, nil
	}
	c.valid = false
	if err := c.work.build(p, qRows, spec); err != nil {
		return nil, false, err
	}
	c.heads, c.kvHeads, c.headDim, c.qRows, c.spec = p.Heads, p.KVHeads, p.HeadDim, qRows, spec
	c.seqs, c.blocks = c.seqs[:0], c.blocks[:0]
	for _, s := range p.Seqs {
		c.blocks = append(c.blocks, s.Blocks...)
	}
	off := 0
	for _, s := range p.Seqs {
		cs := s
		cs.Blocks = c.blocks[off : off+len(s.Blocks) : off+len(s.Blocks)]
		off += len(s.Blocks)
		c.seqs = append(c.seqs, cs)
	}
	c.valid = true
	return &c.work, false, nil
}

func (c *attnCache) matches(p kernels.AttnParams, qRows int, spec kernels.KVSpec) bool {
	if p.Heads != c.heads || p.KVHeads != c.kvHeads || p.HeadDim != c.headDim || qRows != c.qRows ||
		spec != c.spec || len(p.Seqs) != len(c.seqs) {
		return false
	}
	for i, s := range p.Seqs {
		o := c.seqs[i]
		if s.QueryStart != o.QueryStart || s.QueryLen != o.QueryLen || s.KVLen != o.KVLen || len(s.Blocks) != len(o.Blocks) {
			return false
		}
		for j, b := range s.Blocks {
			if b != o.Blocks[j] {
				return false
			}
		}
	}
	return true
}

// invalidate forgets the cached work (after a failed launch the device copy
// may be incomplete).
func (c *attnCache) invalidate() { c.valid = false }
