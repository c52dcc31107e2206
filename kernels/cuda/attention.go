package cuda

import (
	"fmt"

	"github.com/tandemserve/tandem/kernels"
)

// taskInts is the size of one tc_attn_task (csrc/tandem_cuda.h) in int32s:
// query row, query head, keys visible, offset of the block table.
const taskInts = 4

// attnWarps is TC_ATTN_WARPS: tasks per thread block.
const attnWarps = 4

// attentionTasks turns an attention call into the kernel's work list and
// one concatenated block table, after checking every index the kernel will
// follow, so a malformed batch is an error instead of a stray device read.
//
// For each sequence and KV head, the (query row, query head) pairs of the
// heads sharing that KV head are listed row by row and cut into groups of
// attnWarps; a group shares its key tiles in shared memory. Rows of decode
// sequences thus put a whole GQA group in one thread block.
func attentionTasks(p kernels.AttnParams, qRows int, spec kernels.KVSpec) (tasks, tables []int32, err error) {
	group := p.Heads / p.KVHeads
	for i, s := range p.Seqs {
		switch {
		case s.QueryLen < 0 || s.QueryStart < 0 || s.QueryStart+s.QueryLen > qRows:
			return nil, nil, fmt.Errorf("%w: sequence %d query rows [%d, %d) outside [0, %d)", ErrInvalidArgument, i, s.QueryStart, s.QueryStart+s.QueryLen, qRows)
		case s.KVLen < s.QueryLen:
			return nil, nil, fmt.Errorf("%w: sequence %d has %d queries but %d keys", ErrInvalidArgument, i, s.QueryLen, s.KVLen)
		case s.KVLen > len(s.Blocks)*spec.BlockSize:
			return nil, nil, fmt.Errorf("%w: sequence %d has %d keys but %d blocks of %d", ErrInvalidArgument, i, s.KVLen, len(s.Blocks), spec.BlockSize)
		}
		if s.QueryLen == 0 {
			continue
		}
		used := (s.KVLen + spec.BlockSize - 1) / spec.BlockSize
		for _, blk := range s.Blocks[:used] {
			if blk < 0 || int(blk) >= spec.Blocks {
				return nil, nil, fmt.Errorf("%w: sequence %d block %d outside [0, %d)", ErrInvalidArgument, i, blk, spec.Blocks)
			}
		}
		off := int32(len(tables))
		tables = append(tables, s.Blocks[:used]...)
		for kvh := 0; kvh < p.KVHeads; kvh++ {
			n := 0
			for r := 0; r < s.QueryLen; r++ {
				keys := int32(s.KVLen - s.QueryLen + r + 1)
				for g := 0; g < group; g++ {
					tasks = append(tasks, int32(s.QueryStart+r), int32(kvh*group+g), keys, off)
					n++
				}
			}
			for ; n%attnWarps != 0; n++ {
				tasks = append(tasks, -1, 0, 0, 0)
			}
		}
	}
	return tasks, tables, nil
}
