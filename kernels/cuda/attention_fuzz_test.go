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
	f.Add([]byte{2, 0, 1, 8, 3, 2, 0, 1, 9, 3, 0, 1, 2}) // one decode row over 576 keys: split
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
		wide := next()%2 == 0 // long sequences reach the key-range split
		p := kernels.AttnParams{KVHeads: kvHeads, Heads: kvHeads * (1 + abs(next())%4), HeadDim: 8}
		spec := kernels.KVSpec{Layers: 1, Blocks: 1 + abs(next())%16, BlockSize: 1 + abs(next())%8, KVHeads: kvHeads, HeadDim: 8}
		scale := 1
		if wide {
			spec.BlockSize *= 64
			scale = 64
		}
		qRows := abs(next()) % 32
		for len(data) > 0 && len(p.Seqs) < 8 {
			s := kernels.AttnSeq{QueryStart: next(), QueryLen: next(), KVLen: next() * scale}
			for n := abs(next()) % 6; n > 0; n-- {
				s.Blocks = append(s.Blocks, int32(next()))
			}
			p.Seqs = append(p.Seqs, s)
		}
		w, err := attentionTasks(p, qRows, spec)
		if err != nil {
			return
		}
		checkWork(t, w, p, qRows, spec)
	})
}

// checkWork asserts the invariants the kernels rely on.
func checkWork(t *testing.T, w attnWork, p kernels.AttnParams, qRows int, spec kernels.KVSpec) {
	t.Helper()
	if len(w.tasks)%(taskInts*attnWarps) != 0 {
		t.Fatalf("%d task ints is not whole thread blocks", len(w.tasks))
	}
	for _, b := range w.tables {
		if b < 0 || int(b) >= spec.Blocks {
			t.Fatalf("table holds block %d of %d", b, spec.Blocks)
		}
	}
	written := make([]int, w.parts)
	group := p.Heads / p.KVHeads
	for b := 0; b < len(w.tasks); b += taskInts * attnWarps {
		off, kvh, begin := int32(-1), int32(-1), int32(-1)
		for i := b; i < b+taskInts*attnWarps; i += taskInts {
			task := w.tasks[i : i+taskInts]
			row, head, end, toff, kbeg, part := task[0], task[1], task[2], task[3], task[4], task[5]
			if row == -1 {
				continue
			}
			if row < 0 || int(row) >= qRows || head < 0 || int(head) >= p.Heads || toff < 0 {
				t.Fatalf("task %v out of range (qRows %d, heads %d)", task, qRows, p.Heads)
			}
			if kbeg < 0 || kbeg >= end || kbeg%32 != 0 {
				t.Fatalf("task %v has key range [%d, %d)", task, kbeg, end)
			}
			// Keys [begin, end) live in table entries [off, off+ceil(end/bs)).
			if need := int(toff) + (int(end)+spec.BlockSize-1)/spec.BlockSize; need > len(w.tables) {
				t.Fatalf("task %v reads table entry %d of %d", task, need-1, len(w.tables))
			}
			if part >= int32(w.parts) || part < -1 {
				t.Fatalf("task %v writes partial %d of %d", task, part, w.parts)
			}
			if part >= 0 {
				written[part]++
			}
			if off == -1 {
				off, kvh, begin = toff, head/int32(group), kbeg
			}
			if toff != off || head/int32(group) != kvh || kbeg != begin {
				t.Fatalf("thread block %d mixes sequences, KV heads or key ranges: %v", b/(taskInts*attnWarps), w.tasks[b:b+taskInts*attnWarps])
			}
		}
	}
	covered := make([]int, w.parts)
	for i := 0; i < len(w.combine); i += combineInts {
		row, head, first, n := w.combine[i], w.combine[i+1], w.combine[i+2], w.combine[i+3]
		if row < 0 || int(row) >= qRows || head < 0 || int(head) >= p.Heads || n < 2 || first < 0 || int(first+n) > w.parts {
			t.Fatalf("combine %v out of range (%d partials)", w.combine[i:i+combineInts], w.parts)
		}
		for j := first; j < first+n; j++ {
			covered[j]++
		}
	}
	for i := range written {
		if written[i] != 1 || covered[i] != 1 {
			t.Fatalf("partial %d written %d times, combined %d times", i, written[i], covered[i])
		}
	}
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}
