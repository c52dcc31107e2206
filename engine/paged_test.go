package engine_test

import (
	"context"
	"math"
	"testing"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/model/llama"
)

// pagedRun computes the logits of tokens' last position in chunks (each
// chunk one forward pass over the cached earlier tokens plus the new ones),
// with the sequence's slots in table order.
func pagedRun(t testing.TB, m *llama.Model, c kernels.KVCache, table []int32, tokens []int32, chunks []int) []float32 {
	t.Helper()
	bs := c.Spec().BlockSize
	done := 0
	var logits []float32
	for _, n := range chunks {
		var b llama.Batch
		for p := done; p < done+n; p++ {
			b.Tokens = append(b.Tokens, tokens[p])
			b.Positions = append(b.Positions, int32(p))
			b.Slots = append(b.Slots, table[p/bs]*int32(bs)+int32(p%bs))
		}
		done += n
		b.Seqs = []kernels.AttnSeq{{QueryStart: 0, QueryLen: n, KVLen: done, Blocks: table}}
		b.LogitRows = []int32{int32(n - 1)}
		var err error
		logits, err = m.Forward(context.Background(), c, &b, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	if done != len(tokens) {
		t.Fatalf("chunks cover %d of %d tokens", done, len(tokens))
	}
	return logits
}

func maxAbsDiff(a, b []float32) float64 {
	var d float64
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i]-b[i])))
	}
	return d
}

func argmax(x []float32) int {
	best := 0
	for i, v := range x {
		if v > x[best] {
			best = i
		}
	}
	return best
}

// TestPagedMatchesContiguous checks the block-table plumbing through the
// model: logits computed with a sequence scattered over non-adjacent blocks,
// and with its prompt split into a cached prefix plus new tokens (prefill
// over a cached prefix) or into single decode steps, equal one contiguous
// pass (one block holding the whole sequence).
func TestPagedMatchesContiguous(t *testing.T) {
	m := tiny(t)
	mc := m.Config()
	tokens := append(append([]int32(nil), prompts()[2]...), prompts()[0]...) // 37 tokens
	newCache := func(blocks, bs int, dt kernels.KVDType) kernels.KVCache {
		c, err := m.Backend().NewKVCache(mc.KVSpec(blocks, bs, dt))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	contiguous := pagedRun(t, m, newCache(1, 64, kernels.KVF16), []int32{0}, tokens, []int{len(tokens)})
	decode := make([]int, len(tokens))
	for i := range decode {
		decode[i] = 1
	}
	scattered := []int32{17, 3, 9, 0, 12, 5, 19, 1, 14, 7}
	tests := []struct {
		name   string
		bs     int
		table  []int32
		chunks []int
	}{
		{"scattered blocks, one pass", 4, scattered, []int{37}},
		{"cached prefix plus new tokens", 4, scattered, []int{24, 13}},
		{"prefix ends mid-block", 4, scattered, []int{10, 20, 7}},
		{"decode token by token", 4, scattered, decode},
		{"block size one, reversed", 1, reversed(40), []int{16, 21}},
		{"block size 16", 16, []int32{2, 0, 1}, []int{32, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := pagedRun(t, m, newCache(40, tc.bs, kernels.KVF16), tc.table, tokens, tc.chunks)
			if d := maxAbsDiff(contiguous, got); d > 1e-4 {
				t.Errorf("paged logits differ from contiguous by %g", d)
			}
			if argmax(got) != argmax(contiguous) {
				t.Errorf("argmax %d, contiguous %d", argmax(got), argmax(contiguous))
			}
		})
	}
}

func reversed(n int) []int32 {
	out := make([]int32, n)
	for i := range out {
		out[i] = int32(n - 1 - i)
	}
	return out
}

// TestInt8KVAccuracy measures what the int8 KV format costs against f16 on
// the test model: the largest logit difference and the top-1 agreement.
func TestInt8KVAccuracy(t *testing.T) {
	m := tiny(t)
	mc := m.Config()
	for _, p := range prompts() {
		var logits [2][]float32
		for i, dt := range []kernels.KVDType{kernels.KVF16, kernels.KVInt8} {
			c, err := m.Backend().NewKVCache(mc.KVSpec(16, 4, dt))
			if err != nil {
				t.Fatal(err)
			}
			logits[i] = pagedRun(t, m, c, []int32{3, 1, 4, 0, 5, 9, 2, 6}, p, []int{len(p)})
			c.Close()
		}
		d := maxAbsDiff(logits[0], logits[1])
		t.Logf("prompt of %d tokens: int8 vs f16 max |Δlogit| = %.4f", len(p), d)
		if d > 0.25 {
			t.Errorf("int8 KV moved logits by %g", d)
		}
		if argmax(logits[0]) != argmax(logits[1]) {
			t.Errorf("int8 KV changed the greedy token: %d vs %d", argmax(logits[1]), argmax(logits[0]))
		}
	}
}
