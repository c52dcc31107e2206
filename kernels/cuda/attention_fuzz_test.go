package cuda

import (
	"testing"

	"github.com/tandemserve/tandem/kernels"
)

// FuzzAttentionTasks feeds arbitrary sequence descriptions to the work-list
// builder, which is what stands between a malformed batch and an
// out-of-bounds read on the device. Whenever it accepts a batch, every index
// the kernel will follow must be in range.
func FuzzAttentionTasks(f *testing.F) {
	f.Add([]byte{2, 1, 4, 8, 0, 1, 1, 0, 3, 2, 1})
	f.Add([]byte{3, 3, 1, 16, 0, 5, 5, 1, 2, 3, 4, 5, 0})
	f.Add([]byte{1, 1, 2, 2, 1, 1, 3, 7, 255, 0, 9})
	f.Fuzz(func(t *testing.T, data []byte) {
		next := func() int {
			if len(data) == 0 {
				return 0
			}
			v := int(int8(data[0]))
			data = data[1:]
			return v
		}
		kvHeads := 1 + abs(next())%4
		p := kernels.AttnParams{KVHeads: kvHeads, Heads: kvHeads * (1 + abs(next())%4), HeadDim: 8}
		spec := kernels.KVSpec{Layers: 1, Blocks: 1 + abs(next())%16, BlockSize: 1 + abs(next())%8, KVHeads: kvHeads, HeadDim: 8}
		qRows := abs(next()) % 32
		for len(data) > 0 && len(p.Seqs) < 8 {
			s := kernels.AttnSeq{QueryStart: next(), QueryLen: next(), KVLen: next()}
			for n := abs(next()) % 6; n > 0; n-- {
				s.Blocks = append(s.Blocks, int32(next()))
			}
			p.Seqs = append(p.Seqs, s)
		}
		tasks, tables, err := attentionTasks(p, qRows, spec)
		if err != nil {
			return
		}
		if len(tasks)%(taskInts*attnWarps) != 0 {
			t.Fatalf("%d task ints is not whole thread blocks", len(tasks))
		}
		for _, b := range tables {
			if b < 0 || int(b) >= spec.Blocks {
				t.Fatalf("table holds block %d of %d", b, spec.Blocks)
			}
		}
		for i := 0; i < len(tasks); i += taskInts {
			row, head, keys, off := tasks[i], tasks[i+1], tasks[i+2], tasks[i+3]
			if row == -1 {
				continue
			}
			if row < 0 || int(row) >= qRows || head < 0 || int(head) >= p.Heads || keys <= 0 || off < 0 {
				t.Fatalf("task %v out of range (qRows %d, heads %d)", tasks[i:i+taskInts], qRows, p.Heads)
			}
			// Keys [0, keys) live in table entries [off, off+ceil(keys/bs)).
			if need := int(off) + (int(keys)+spec.BlockSize-1)/spec.BlockSize; need > len(tables) {
				t.Fatalf("task %v reads table entry %d of %d", tasks[i:i+taskInts], need-1, len(tables))
			}
		}
		// One thread block never mixes sequences or KV heads.
		group := p.Heads / p.KVHeads
		for b := 0; b < len(tasks); b += taskInts * attnWarps {
			off, kvh := int32(-1), int32(-1)
			for w := 0; w < attnWarps; w++ {
				task := tasks[b+w*taskInts : b+(w+1)*taskInts]
				if task[0] == -1 {
					continue
				}
				if off == -1 {
					off, kvh = task[3], task[1]/int32(group)
				}
				if task[3] != off || task[1]/int32(group) != kvh {
					t.Fatalf("thread block %d mixes sequences or KV heads: %v", b/(taskInts*attnWarps), tasks[b:b+taskInts*attnWarps])
				}
			}
		}
	})
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
