package tokenizer

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

// A splitter cuts s into consecutive pieces that cover it exactly and appends
// them to dst. Pieces are substrings of s: splitting allocates nothing but dst.
//
// llama.cpp describes each pre-tokenizer as a list of regular expressions
// applied in sequence: every expression splits each piece left by the one
// before into its matches and the text between them. The expressions use
// lookahead, which Go's regexp lacks, so each is written here as a scanner
// that tries the alternatives in the expression's order at each position.
// Invalid UTF-8 bytes count as "other" characters (neither letter, number nor
// space) and are kept byte-exact so that decoding restores them.
type splitter func(dst []string, s string) []string

// preTokenizer applies stages in sequence, as llama.cpp's regex lists do.
type preTokenizer struct {
	name   string
	stages []splitter
	// ignoreMerges emits a whole piece as one token when the vocabulary has
	// it, before BPE (llama.cpp sets it for the Llama-3 family).
	ignoreMerges bool
}

// newPreTokenizer returns the pre-tokenizer llama.cpp uses for the
// tokenizer.ggml.pre value name.
func newPreTokenizer(name string) (*preTokenizer, error) {
	p := &preTokenizer{name: name}
	switch name {
	case "", "default":
		p.stages = []splitter{splitPunctRuns, splitGPT2, splitNumberRuns, splitThreeDigits}
	case "gpt2", "gpt-2", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v1-en",
		"jina-v2-es", "jina-v2-de", "jina-v2-code", "roberta-bpe", "mpt", "olmo", "jais":
		p.stages = []splitter{splitGPT2}
	case "smollm":
		p.stages = []splitter{splitEachNumber, splitGPT2}
	case "llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral", "midm-2.0", "lfm2":
		p.stages = []splitter{splitLlama3}
		p.ignoreMerges = true
	case "dbrx", "smaug-bpe":
		p.stages = []splitter{splitLlama3}
	case "qwen2", "deepseek-r1-qwen", "stablelm2", "megrez":
		p.stages = []splitter{splitQwen2}
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownPreTokenizer, name)
	}
	return p, nil
}

// split cuts text into the pieces BPE runs on. buf and tmp are scratch
// slices the caller may reuse; the result aliases one of them.
func (p *preTokenizer) split(text string, buf, tmp []string) []string {
	pieces := append(buf[:0], text)
	for _, stage := range p.stages {
		next := tmp[:0]
		for _, piece := range pieces {
			next = stage(next, piece)
		}
		pieces, tmp = next, pieces
	}
	return pieces
}

// Character classes with the meaning \s, \p{L}, \p{N} and \p{P} have in the
// regular expressions (Unicode White_Space and general categories).
// utf8.RuneError stands for an invalid byte and is in none of them.
func isSpace(r rune) bool  { return unicode.IsSpace(r) }
func isLetter(r rune) bool { return r != utf8.RuneError && unicode.IsLetter(r) }
func isNumber(r rune) bool { return unicode.IsNumber(r) }
func isOther(r rune) bool  { return !isSpace(r) && !isLetter(r) && !isNumber(r) }
func isCRLF(r rune) bool   { return r == '\r' || r == '\n' }

// runeAt decodes the rune at byte offset i; size is 0 at the end of s.
func runeAt(s string, i int) (r rune, size int) {
	if i >= len(s) {
		return -1, 0
	}
	if c := s[i]; c < utf8.RuneSelf {
		return rune(c), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// span advances from i over runes satisfying class and returns the end.
func span(s string, i int, class func(rune) bool) int {
	for {
		r, n := runeAt(s, i)
		if n == 0 || !class(r) {
			return i
		}
		i += n
	}
}

// spaceRun measures the whitespace run starting at i: its end, and the byte
// offset of its last rune.
func spaceRun(s string, i int) (end, last int) {
	end, last = i, i
	for {
		r, n := runeAt(s, end)
		if n == 0 || !isSpace(r) {
			return end, last
		}
		last = end
		end += n
	}
}

// spaces implements the tail shared by the GPT-2 and Llama-3 expressions,
// `\s+(?!\S)|\s+`, at a position holding whitespace: a run that reaches the
// end of the piece is taken whole; otherwise its last rune is left to start
// the next piece (so " word" keeps its space), unless the run is one rune.
func spaces(s string, i int) int {
	end, last := spaceRun(s, i)
	if end == len(s) || last == i {
		return end
	}
	return last
}

// gpt2Contraction matches 's|'t|'re|'ve|'m|'ll|'d at i (case-sensitive).
func gpt2Contraction(s string, i int) int {
	if s[i] != '\'' || i+1 >= len(s) {
		return 0
	}
	switch s[i+1] {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && s[i+2] == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && s[i+2] == 'l' {
			return 3
		}
	}
	return 0
}

// llama3Contraction matches (?i:'s|'t|'re|'ve|'m|'ll|'d) at i, ASCII case
// folding only, as llama.cpp's expression spells it ('[sS]|'[tT]|...).
func llama3Contraction(s string, i int) int {
	if s[i] != '\'' || i+1 >= len(s) {
		return 0
	}
	lower := func(c byte) byte { return c | 0x20 }
	switch lower(s[i+1]) {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && lower(s[i+2]) == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && lower(s[i+2]) == 'l' {
			return 3
		}
	}
	return 0
}

// splitGPT2 is `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`.
func splitGPT2(dst []string, s string) []string {
	for i := 0; i < len(s); {
		end := gpt2Token(s, i)
		dst = append(dst, s[i:end])
		i = end
	}
	return dst
}

func gpt2Token(s string, i int) int {
	if n := gpt2Contraction(s, i); n > 0 {
		return i + n
	}
	j := i
	if s[j] == ' ' {
		j++
	}
	if r, n := runeAt(s, j); n > 0 {
		switch {
		case isLetter(r):
			return span(s, j+n, isLetter)
		case isNumber(r):
			return span(s, j+n, isNumber)
		case isOther(r):
			return span(s, j+n, isOther)
		}
	}
	if r, n := runeAt(s, i); isSpace(r) {
		return spaces(s, i)
	} else {
		return i + n
	}
}

// splitLlama3 is llama.cpp's Llama-3 expression
// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`.
func splitLlama3(dst []string, s string) []string {
	for i := 0; i < len(s); {
		end := llama3Token(s, i, 3)
		dst = append(dst, s[i:end])
		i = end
	}
	return dst
}

// splitQwen2 is the Llama-3 expression with \p{N} instead of \p{N}{1,3}.
func splitQwen2(dst []string, s string) []string {
	for i := 0; i < len(s); {
		end := llama3Token(s, i, 1)
		dst = append(dst, s[i:end])
		i = end
	}
	return dst
}

func llama3Token(s string, i, maxDigits int) int {
	if n := llama3Contraction(s, i); n > 0 {
		return i + n
	}
	r, n := runeAt(s, i)
	// [^\r\n\p{L}\p{N}]?\p{L}+
	if isLetter(r) {
		return span(s, i+n, isLetter)
	}
	if !isCRLF(r) && !isNumber(r) {
		if r2, n2 := runeAt(s, i+n); n2 > 0 && isLetter(r2) {
			return span(s, i+n+n2, isLetter)
		}
	}
	// \p{N}{1,3}
	if isNumber(r) {
		end := i + n
		for k := 1; k < maxDigits; k++ {
			r2, n2 := runeAt(s, end)
			if n2 == 0 || !isNumber(r2) {
				break
			}
			end += n2
		}
		return end
	}
	// ` ?[^\s\p{L}\p{N}]+[\r\n]*`
	j := i
	if r == ' ' {
		j++
	}
	if r2, n2 := runeAt(s, j); n2 > 0 && isOther(r2) {
		end := span(s, j+n2, isOther)
		return span(s, end, isCRLF)
	}
	if !isSpace(r) {
		// Unreachable for well-formed classes; keeps the scanner total.
		return i + n
	}
	// \s*[\r\n]+ : the whitespace run up to and including its last newline.
	end, _ := spaceRun(s, i)
	for k := end; k > i; {
		r2, n2 := utf8.DecodeLastRuneInString(s[i:k])
		if isCRLF(r2) {
			return k
		}
		k -= n2
	}
	return spaces(s, i)
}

// splitEachNumber is `\p{N}`: every number character becomes its own piece.
func splitEachNumber(dst []string, s string) []string {
	start := 0
	for i := 0; i < len(s); {
		r, n := runeAt(s, i)
		if isNumber(r) {
			if start < i {
				dst = append(dst, s[start:i])
			}
			dst = append(dst, s[i:i+n])
			start = i + n
		}
		i += n
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

// splitRuns cuts s into maximal runs of class and the text between them.
func splitRuns(dst []string, s string, class func(rune) bool) []string {
	start := 0
	for i := 0; i < len(s); {
		r, n := runeAt(s, i)
		if !class(r) {
			i += n
			continue
		}
		end := span(s, i, class)
		if start < i {
			dst = append(dst, s[start:i])
		}
		dst = append(dst, s[i:end])
		start, i = end, end
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}

// splitPunctRuns is `[\p{P}\$\+<=>\^~\|]+`.
func splitPunctRuns(dst []string, s string) []string {
	return splitRuns(dst, s, func(r rune) bool {
		switch r {
		case '$', '+', '<', '=', '>', '^', '~', '|':
			return true
		}
		return unicode.IsPunct(r)
	})
}

// splitNumberRuns is `\p{N}+`.
func splitNumberRuns(dst []string, s string) []string {
	return splitRuns(dst, s, isNumber)
}

// splitThreeDigits is `[0-9][0-9][0-9]`: leftmost non-overlapping triples.
func splitThreeDigits(dst []string, s string) []string {
	isDigit := func(c byte) bool { return c >= '0' && c <= '9' }
	start := 0
	for i := 0; i+3 <= len(s); {
		if isDigit(s[i]) && isDigit(s[i+1]) && isDigit(s[i+2]) {
			if start < i {
				dst = append(dst, s[start:i])
			}
			dst = append(dst, s[i:i+3])
			i += 3
			start = i
			continue
		}
		i++
	}
	if start < len(s) {
		dst = append(dst, s[start:])
	}
	return dst
}
