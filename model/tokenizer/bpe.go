package tokenizer

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"
)

// bpeModel is byte-level BPE as GPT-2 defined it and llama.cpp implements it.
//
// Symbols are identified by integer ids so the merge loop never builds
// strings: ids below the vocabulary size are tokens; ids above it intern
// symbol texts that merges produce but the vocabulary lacks (a malformed but
// loadable file), so merging behaves exactly as llama.cpp's string-keyed
// merge table does.
type bpeModel struct {
	pre *preTokenizer
	// ranks maps a symbol pair (left<<32 | right) to the merge's rank and the
	// id of the merged symbol.
	ranks map[uint64]bpeMerge
	// byteSym[b] is the symbol id of byte b's character in GPT-2's byte
	// alphabet.
	byteSym [256]int32
	// byteRune is gpt2ByteRunes(), kept to avoid rebuilding it per word.
	byteRune [256]rune
	// synth holds the texts of symbols with ids >= vocabulary size.
	synth  []string
	nVocab int32
	cache  wordCache
}

// wordCache remembers the tokens of short pre-tokenized pieces: prompts
// repeat words, and a lookup costs a fraction of the merge loop. It is
// insert-only and stops growing at wordCacheCap entries, so it needs no
// eviction and its memory is bounded (about 1 MiB); results never depend on
// what it holds. Safe for concurrent use.
type wordCache struct {
	m sync.Map // string -> []int32
	n atomic.Int64
}

const (
	wordCacheCap    = 1 << 14
	wordCacheMaxLen = 32 // bytes; longer pieces rarely repeat
)

func (c *wordCache) get(word string) ([]int32, bool) {
	v, ok := c.m.Load(word)
	if !ok {
		return nil, false
	}
	return v.([]int32), true
}

func (c *wordCache) put(word string, ids []int32) {
	if c.n.Load() >= wordCacheCap {
		return
	}
	// Clone: word is a substring of the caller's text, which the cache
	// must not keep alive.
	if _, loaded := c.m.LoadOrStore(strings.Clone(word), slices.Clone(ids)); !loaded {
		c.n.Add(1)
	}
}

type bpeMerge struct {
	rank int32
	id   int32
}

// gpt2ByteRunes is GPT-2's bytes_to_unicode table: printable Latin-1 bytes
// stand for themselves, the 68 others map in order to U+0100 upwards, so
// every byte string becomes printable text without spaces.
func gpt2ByteRunes() [256]rune {
	var table [256]rune
	next := rune(256)
	for b := 0; b < 256; b++ {
		switch {
		case b >= '!' && b <= '~', b >= 0xA1 && b <= 0xAC, b >= 0xAE && b <= 0xFF:
			table[b] = rune(b)
		default:
			table[b] = next
			next++
		}
	}
	return table
}

func newBPEModel(t *Tokenizer, pre string, merges []string) (*bpeModel, error) {
	p, err := newPreTokenizer(pre)
	if err != nil {
		return nil, err
	}
	m := &bpeModel{
		pre:    p,
		ranks:  make(map[uint64]bpeMerge, len(merges)),
		nVocab: int32(len(t.tokens)),
	}
	synthID := make(map[string]int32)
	intern := func(s string) int32 {
		if id, ok := t.toID[s]; ok {
			return id
		}
		if id, ok := synthID[s]; ok {
			return id
		}
		id := m.nVocab + int32(len(m.synth))
		m.synth = append(m.synth, s)
		synthID[s] = id
		return id
	}
	m.byteRune = gpt2ByteRunes()
	for b, r := range m.byteRune {
		m.byteSym[b] = intern(string(r))
	}
	for rank, merge := range merges {
		// llama.cpp splits at the first space after the first byte, so a
		// merge may start with a literal space.
		sp := -1
		if len(merge) > 1 {
			sp = strings.IndexByte(merge[1:], ' ')
		}
		if sp < 0 {
			return nil, fmt.Errorf("%w: merge %d %q has no space", ErrInvalidVocab, rank, merge)
		}
		left, right := merge[:sp+1], merge[sp+2:]
		key := uint64(uint32(intern(left)))<<32 | uint64(uint32(intern(right)))
		if _, dup := m.ranks[key]; dup {
			continue // the first (lowest) rank wins, as in llama.cpp
		}
		m.ranks[key] = bpeMerge{rank: int32(rank), id: intern(left + right)}
	}
	return m, nil
}

// bpeSymbol is one node of the doubly linked list of symbols of a word.
type bpeSymbol struct {
	id         int32
	prev, next int32 // -1 at the ends
}

// bpePair is a candidate merge of two adjacent symbols.
type bpePair struct {
	rank        int32
	left, right int32 // symbol indexes
	lid, rid    int32 // their ids when the pair was queued, to detect staleness
	id          int32 // merged symbol id
}

// bpeScratch holds the buffers one Encode call reuses across words.
type bpeScratch struct {
	pieces, tmp []string
	syms        []bpeSymbol
	heap        []bpePair
	word        []byte
	// encodeSmallWord's arrays
	ids, ranks, merged []int32
}

// encode appends the tokens of one raw text fragment to out.
func (m *bpeModel) encode(t *Tokenizer, text string, sc *bpeScratch, out []int32) []int32 {
	text = replaceInvalidUTF8(text)
	sc.pieces = m.pre.split(text, sc.pieces, sc.tmp)
	for _, piece := range sc.pieces {
		if m.pre.ignoreMerges {
			sc.word = m.appendByteLevel(sc.word[:0], piece)
			if id, ok := t.toID[string(sc.word)]; ok {
				out = append(out, id)
				continue
			}
		}
		if len(piece) > wordCacheMaxLen {
			out = m.encodeWord(t, piece, sc, out)
			continue
		}
		if ids, ok := m.cache.get(piece); ok {
			out = append(out, ids...)
			continue
		}
		n := len(out)
		out = m.encodeWord(t, piece, sc, out)
		m.cache.put(piece, out[n:])
	}
	return out
}

// replaceInvalidUTF8 replaces every byte that is not part of a valid UTF-8
// sequence with U+FFFD, as llama.cpp does before pre-tokenizing (each bad
// byte becomes one replacement character). Byte-level vocabularies often
// lack tokens for bytes that never occur in valid UTF-8 (0xF5..0xFF), so
// passing such bytes through would produce unknown tokens.
func replaceInvalidUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	b := make([]byte, 0, len(s)+8)
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			b = append(b, replacement...)
		} else {
			b = append(b, s[i:i+n]...)
		}
		i += n
	}
	return string(b)
}

// appendByteLevel appends the GPT-2 byte-alphabet form of s to dst.
func (m *bpeModel) appendByteLevel(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		dst = utf8.AppendRune(dst, m.byteRune[s[i]])
	}
	return dst
}

// smallWord is the piece length (bytes) up to which encodeWord scans an
// array of pair ranks instead of keeping a heap: for the short pieces that
// make up most text, a linear scan beats heap upkeep.
const smallWord = 64

// encodeWord runs the merge loop on one pre-tokenized piece: repeatedly merge
// the adjacent pair with the lowest rank (leftmost on ties).
func (m *bpeModel) encodeWord(t *Tokenizer, word string, sc *bpeScratch, out []int32) []int32 {
	switch {
	case len(word) == 0:
		return out
	case len(word) == 1:
		return m.emit(t, m.byteSym[word[0]], out)
	case len(word) <= smallWord:
		return m.encodeSmallWord(t, word, sc, out)
	}
	return m.encodeHeapWord(t, word, sc, out)
}

// encodeHeapWord is encodeWord for long pieces: symbols form a linked list
// and candidate pairs wait in a heap ordered by (rank, position); entries
// made stale by a neighbour's merge are skipped when popped, as in
// llama.cpp.
func (m *bpeModel) encodeHeapWord(t *Tokenizer, word string, sc *bpeScratch, out []int32) []int32 {
	syms := sc.syms[:0]
	for i := 0; i < len(word); i++ {
		syms = append(syms, bpeSymbol{id: m.byteSym[word[i]], prev: int32(i - 1), next: int32(i + 1)})
	}
	syms[len(syms)-1].next = -1
	h := sc.heap[:0]
	for i := 0; i+1 < len(syms); i++ {
		h = m.pushPair(h, syms, int32(i), int32(i+1))
	}
	for len(h) > 0 {
		var p bpePair
		p, h = heapPop(h, pairLess)
		l, r := &syms[p.left], &syms[p.right]
		if l.id != p.lid || r.id != p.rid || l.next != p.right {
			continue // a neighbour merged since this pair was queued
		}
		l.id = p.id
		l.next = r.next
		if r.next >= 0 {
			syms[r.next].prev = p.left
		}
		r.id = -1
		if l.prev >= 0 {
			h = m.pushPair(h, syms, l.prev, p.left)
		}
		if l.next >= 0 {
			h = m.pushPair(h, syms, p.left, l.next)
		}
	}
	for i := int32(0); i >= 0; i = syms[i].next {
		out = m.emit(t, syms[i].id, out)
	}
	sc.syms, sc.heap = syms, h
	return out
}

// lookup returns the rank and result of merging left and right, or
// noMerge.
func (m *bpeModel) lookup(left, right int32) (rank, id int32) {
	mg, ok := m.ranks[uint64(uint32(left))<<32|uint64(uint32(right))]
	if !ok {
		return noMerge, -1
	}
	return mg.rank, mg.id
}

// noMerge ranks a pair that has no merge, above every real rank.
const noMerge = int32(1<<31 - 1)

// encodeSmallWord is encodeWord for short pieces. ids holds the current
// symbols, ranks[i] and merged[i] describe the pair (ids[i], ids[i+1]); after
// a merge only the two pairs touching the new symbol are looked up again.
func (m *bpeModel) encodeSmallWord(t *Tokenizer, word string, sc *bpeScratch, out []int32) []int32 {
	ids, ranks, merged := sc.ids[:0], sc.ranks[:0], sc.merged[:0]
	for i := 0; i < len(word); i++ {
		ids = append(ids, m.byteSym[word[i]])
	}
	for i := 0; i+1 < len(ids); i++ {
		r, id := m.lookup(ids[i], ids[i+1])
		ranks = append(ranks, r)
		merged = append(merged, id)
	}
	for {
		best, bestRank := -1, noMerge
		for i, r := range ranks {
			if r < bestRank { // strict: the leftmost of equal ranks wins
				best, bestRank = i, r
			}
		}
		if best < 0 {
			break
		}
		ids[best] = merged[best]
		ids = slices.Delete(ids, best+1, best+2)
		ranks = slices.Delete(ranks, best, best+1)
		merged = slices.Delete(merged, best, best+1)
		if best > 0 {
			ranks[best-1], merged[best-1] = m.lookup(ids[best-1], ids[best])
		}
		if best+1 < len(ids) {
			ranks[best], merged[best] = m.lookup(ids[best], ids[best+1])
		}
	}
	for _, id := range ids {
		out = m.emit(t, id, out)
	}
	sc.ids, sc.ranks, sc.merged = ids, ranks, merged
	return out
}

func (m *bpeModel) pushPair(h []bpePair, syms []bpeSymbol, left, right int32) []bpePair {
	lid, rid := syms[left].id, syms[right].id
	mg, ok := m.ranks[uint64(uint32(lid))<<32|uint64(uint32(rid))]
	if !ok {
		return h
	}
	return heapPush(h, bpePair{rank: mg.rank, left: left, right: right, lid: lid, rid: rid, id: mg.id}, pairLess)
}

// emit appends symbol id. A symbol the vocabulary lacks is emitted as the
// tokens of its single bytes that exist, and dropped otherwise: llama.cpp and
// Hugging Face tokenizers (with no unk token) both drop it, and SmolLM2's
// vocabulary lacks the byte symbols of some control characters (0x04, 0x06,
// ...) and of bytes that never start common UTF-8 sequences.
func (m *bpeModel) emit(t *Tokenizer, id int32, out []int32) []int32 {
	if id < m.nVocab {
		return append(out, id)
	}
	text := m.synth[id-m.nVocab]
	for i := 0; i < len(text); i++ {
		if tok, ok := t.toID[text[i:i+1]]; ok {
			out = append(out, tok)
		}
	}
	return out
}

// pairLess orders the merge queue: lowest rank, then leftmost.
func pairLess(a, b bpePair) bool {
	if a.rank != b.rank {
		return a.rank < b.rank
	}
	return a.left < b.left
}
