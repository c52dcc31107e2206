package blockhash

import (
	"encoding/binary"
	"hash/fnv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// refNext recomputes Next with the standard library's FNV-1a so the byte
// layout documented in the package comment is checked independently.
func refNext(prev uint64, tokens []int32) uint64 {
	h := fnv.New64a()
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], prev)
	h.Write(b[:])
	for _, t := range tokens {
		var w [4]byte
		binary.LittleEndian.PutUint32(w[:], uint32(t))
		h.Write(w[:])
	}
	return fmix64(h.Sum64())
}

func TestNextMatchesStdlibFNV(t *testing.T) {
	tests := []struct {
		name   string
		prev   uint64
		tokens []int32
	}{
		{"empty", 0, nil},
		{"one", 1, []int32{7}},
		{"negative id", 42, []int32{-1, 0, 1}},
		{"block", Seed("m"), []int32{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, want := Next(tc.prev, tc.tokens), refNext(tc.prev, tc.tokens); got != want {
				t.Fatalf("Next = %#x, want %#x", got, want)
			}
		})
	}
}

// TestGolden pins the wire format: the gateway, coordinator and workers of
// different builds must agree on these values.
func TestGolden(t *testing.T) {
	got := Chain("SmolLM2-135M-Instruct", []int32{1, 2, 3, 4, 5, 6, 7, 8, 9}, 4)
	want := []uint64{0x47562c0aa661c335, 0x2eea4ea2c6323613}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Chain (-want +got):\n%s", diff)
	}
}

func TestChainProperties(t *testing.T) {
	toks := make([]int32, 70)
	for i := range toks {
		toks[i] = int32(i * 31)
	}
	tests := []struct {
		name      string
		tokens    []int32
		blockSize int
		wantLen   int
	}{
		{"exact blocks", toks[:64], 16, 4},
		{"partial tail ignored", toks, 16, 4},
		{"shorter than a block", toks[:15], 16, 0},
		{"block size one", toks[:5], 1, 5},
		{"zero block size", toks, 0, 0},
		{"negative block size", toks, -3, 0},
		{"empty", nil, 16, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Chain("m", tc.tokens, tc.blockSize)
			if len(got) != tc.wantLen {
				t.Fatalf("len = %d, want %d", len(got), tc.wantLen)
			}
			// Each hash must chain from the previous one.
			prev := Seed("m")
			for i, h := range got {
				if want := Next(prev, tc.tokens[i*tc.blockSize:(i+1)*tc.blockSize]); h != want {
					t.Fatalf("block %d: %#x, want %#x", i, h, want)
				}
				prev = h
			}
		})
	}
}

func TestChainSeparates(t *testing.T) {
	base := []int32{1, 2, 3, 4, 5, 6, 7, 8}
	changedFirst := []int32{9, 2, 3, 4, 5, 6, 7, 8}
	a := Chain("m", base, 4)
	tests := []struct {
		name string
		got  []uint64
		same []bool // whether block i must equal a[i]
	}{
		{"other model", Chain("n", base, 4), []bool{false, false}},
		{"first block differs, so every later hash differs", Chain("m", changedFirst, 4), []bool{false, false}},
		{"shared prefix", Chain("m", []int32{1, 2, 3, 4, 0, 0, 0, 0}, 4), []bool{true, false}},
		{"same tokens", Chain("m", append([]int32(nil), base...), 4), []bool{true, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for i, same := range tc.same {
				if (tc.got[i] == a[i]) != same {
					t.Errorf("block %d: equal=%v, want %v", i, tc.got[i] == a[i], same)
				}
			}
		})
	}
}

func BenchmarkChain1000(b *testing.B) {
	toks := make([]int32, 1000)
	for i := range toks {
		toks[i] = int32(i)
	}
	b.SetBytes(4000)
	for b.Loop() {
		Chain("m", toks, 16)
	}
}
