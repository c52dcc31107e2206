package llama

import "github.com/tandemserve/tandem/kernels"

// Batch is one forward pass over the new tokens of several sequences.
//
// Tokens, Positions and Slots are per token row; the rows of one sequence are
// contiguous and described by its entry in Seqs (QueryStart, QueryLen, the
// sequence's total KV length after this pass and its block table). Slot i is
// where token i's keys and values are stored: block*BlockSize + offset.
// LogitRows lists the token rows whose next-token logits the caller wants
// (usually the last row of each sequence that finishes its prompt or decodes).
type Batch struct {
	Tokens    []int32
	Positions []int32
	Slots     []int32
	Seqs      []kernels.AttnSeq
	LogitRows []int32
}

// Len is the number of token rows.
func (b *Batch) Len() int { return len(b.Tokens) }
