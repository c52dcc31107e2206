package tokenizer

import (
	"fmt"
	"strings"
)

// spaceMarker is SentencePiece's visible space, U+2581 "▁".
const spaceMarker = "\u2581"

// spmModel is SentencePiece-style BPE as llama.cpp's llm_tokenizer_spm runs
// it: start from UTF-8 characters, repeatedly merge the adjacent pair whose
// concatenation is the highest-scoring token, and spell characters that are
// no token as <0xNN> byte tokens.
type spmModel struct {
	// byteTok[b] is the token for byte b: <0xNN>, else the one-byte text,
	// else UNK (-1 when even that is absent).
	byteTok [256]int32
}

func newSPMModel(t *Tokenizer) (*spmModel, error) {
	m := &spmModel{}
	for b := range m.byteTok {
		id, ok := t.toID[fmt.Sprintf("<0x%02X>", b)]
		if !ok {
			id, ok = t.toID[string([]byte{byte(b)})]
		}
		if !ok {
			id = t.unk
		}
		m.byteTok[b] = id
	}
	return m, nil
}

// spmSymbol is a contiguous byte range [start, end) of the escaped text.
type spmSymbol struct {
	start, end int32
	prev, next int32
}

type spmPair struct {
	score       float32
	left, right int32
	size        int32 // byte length of the merged text when queued
}

type spmScratch struct {
	syms []spmSymbol
	heap []spmPair
	text []byte
}

// escape applies llama.cpp's SentencePiece preprocessing: an optional
// leading space, then every ' ' becomes U+2581.
func (m *spmModel) escape(dst []byte, text string, prefixSpace bool) []byte {
	if prefixSpace {
		dst = append(dst, spaceMarker...)
	}
	for {
		i := strings.IndexByte(text, ' ')
		if i < 0 {
			return append(dst, text...)
		}
		dst = append(dst, text[:i]...)
		dst = append(dst, spaceMarker...)
		text = text[i+1:]
	}
}

// encode appends the tokens of one raw text fragment to out.
func (m *spmModel) encode(t *Tokenizer, raw string, prefixSpace bool, sc *spmScratch, out []int32) []int32 {
	sc.text = m.escape(sc.text[:0], raw, prefixSpace)
	text := string(sc.text)
	if text == "" {
		return out
	}
	syms := sc.syms[:0]
	for i := 0; i < len(text); {
		// Like llama.cpp, a symbol is one UTF-8 sequence as its lead byte
		// announces it, clipped at the end; invalid bytes stand alone.
		n := utf8SeqLen(text[i])
		if i+n > len(text) {
			n = len(text) - i
		}
		syms = append(syms, spmSymbol{start: int32(i), end: int32(i + n), prev: int32(len(syms) - 1), next: int32(len(syms) + 1)})
		i += n
	}
	syms[len(syms)-1].next = -1
	h := sc.heap[:0]
	for i := 1; i < len(syms); i++ {
		h = m.pushPair(t, h, text, syms, int32(i-1), int32(i))
	}
	for len(h) > 0 {
		var p spmPair
		p, h = heapPop(h, spmLess)
		l, r := &syms[p.left], &syms[p.right]
		if l.end == l.start || r.end == r.start || (l.end-l.start)+(r.end-r.start) != p.size {
			continue // one side merged since this pair was queued
		}
		l.end = r.end
		r.start = r.end
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		h = m.pushPair(t, h, text, syms, l.prev, p.left)
		h = m.pushPair(t, h, text, syms, p.left, l.next)
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		s := text[syms[i].start:syms[i].end]
		if id, ok := t.toID[s]; ok {
			out = append(out, id)
			continue
		}
		for k := 0; k < len(s); k++ {
			if id := m.byteTok[s[k]]; id >= 0 {
				out = append(out, id)
			}
		}
	}
	sc.syms, sc.heap = syms, h
	return out
}

func (m *spmModel) pushPair(t *Tokenizer, h []spmPair, text string, syms []spmSymbol, left, right int32) []spmPair {
	if left < 0 || right < 0 {
		return h
	}
	merged := text[syms[left].start:syms[right].end]
	id, ok := t.toID[merged]
	if !ok {
		return h
	}
	return heapPush(h, spmPair{score: t.scores[id], left: left, right: right, size: int32(len(merged))}, spmLess)
}

// utf8SeqLen is the sequence length a lead byte announces (1 for invalid
// lead bytes), llama.cpp's unicode_len_utf8.
func utf8SeqLen(b byte) int {
	switch {
	case b < 0x80:
		return 1
	case b>>5 == 0x6:
		return 2
	case b>>4 == 0xE:
		return 3
	case b>>3 == 0x1E:
		return 4
	}
	return 1
}

// spmLess orders the merge queue: highest score, then leftmost.
func spmLess(a, b spmPair) bool {
	if a.score != b.score {
		return a.score > b.score
	}
	return a.left < b.left
}

// unescapeSPM turns a normal SentencePiece token back into text.
func unescapeSPM(s string) string {
	if !strings.Contains(s, spaceMarker) {
		return s
	}
	return strings.ReplaceAll(s, spaceMarker, " ")
}
