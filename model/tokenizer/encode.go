package tokenizer

import (
	"sort"
	"strings"
)

// fragment is a piece of the input after special tokens were cut out: either
// raw text [start, end) or one special token (tok >= 0).
type fragment struct {
	tok        int32
	start, end int
}

// collectSpecials lists the tokens matched in text before tokenizing:
// control, user-defined and unknown tokens, longest text first (ties by id,
// for a deterministic order).
func (t *Tokenizer) collectSpecials() []int32 {
	var ids []int32
	for id, typ := range t.types {
		switch typ {
		case TypeControl, TypeUserDefined, TypeUnknown:
			// A duplicated text matches the id Lookup returns, so that
			// Encode and EncodeChat agree.
			if s := t.tokens[id]; s != "" && t.toID[s] == int32(id) {
				ids = append(ids, int32(id))
			}
		}
	}
	sort.SliceStable(ids, func(a, b int) bool {
		return len(t.tokens[ids[a]]) > len(t.tokens[ids[b]])
	})
	return ids
}

// partition cuts text at special-token occurrences the way llama.cpp's
// tokenizer_st_partition does: for each special token, longest first, every
// occurrence inside the remaining raw fragments becomes a token fragment.
// Control and unknown tokens take part only when parseSpecial is set.
func (t *Tokenizer) partition(text string, parseSpecial bool) []fragment {
	if text == "" {
		return nil
	}
	frags := []fragment{{tok: -1, start: 0, end: len(text)}}
	var next []fragment
	for _, id := range t.specials {
		if !parseSpecial && t.types[id] != TypeUserDefined {
			continue
		}
		tok := t.tokens[id]
		if !strings.Contains(text, tok) {
			continue
		}
		next = next[:0]
		for _, f := range frags {
			if f.tok >= 0 {
				next = append(next, f)
				continue
			}
			for start := f.start; start < f.end; {
				i := strings.Index(text[start:f.end], tok)
				if i < 0 {
					next = append(next, fragment{tok: -1, start: start, end: f.end})
					break
				}
				if i > 0 {
					next = append(next, fragment{tok: -1, start: start, end: start + i})
				}
				next = append(next, fragment{tok: id})
				start += i + len(tok)
			}
		}
		frags, next = next, frags
	}
	return frags
}

// Encode turns text into token ids. It never fails: every byte sequence has
// a tokenization (through byte tokens, or by dropping bytes the vocabulary
// cannot spell, as llama.cpp does).
func (t *Tokenizer) Encode(text string, opts EncodeOptions) []int32 {
	return t.encodeFragments(text, t.partition(text, opts.ParseSpecial), opts.AddBOS)
}

// encodeFragments tokenizes text already cut into raw and special-token
// fragments.
func (t *Tokenizer) encodeFragments(text string, frags []fragment, addBOS bool) []int32 {
	out := make([]int32, 0, len(text)/3+2)
	if addBOS && t.bos >= 0 {
		out = append(out, t.bos)
	}
	switch t.kind {
	case modelBPE:
		sc, _ := t.scratch.Get().(*bpeScratch)
		if sc == nil {
			sc = &bpeScratch{}
		}
		for _, f := range frags {
			if f.tok >= 0 {
				out = append(out, f.tok)
				continue
			}
			out = t.bpe.encode(t, text[f.start:f.end], sc, out)
		}
		t.scratch.Put(sc)
	case modelSPM:
		sc, _ := t.scratch.Get().(*spmScratch)
		if sc == nil {
			sc = &spmScratch{}
		}
		// SentencePiece prefixes a space to raw text at the start and after
		// every special token (llama.cpp's is_prev_special).
		prevSpecial := true
		for _, f := range frags {
			if f.tok >= 0 {
				out = append(out, f.tok)
				prevSpecial = true
				continue
			}
			out = t.spm.encode(t, text[f.start:f.end], t.addSpacePrefix && prevSpecial, sc, out)
			prevSpecial = false
		}
		t.scratch.Put(sc)
	}
	return out
}
