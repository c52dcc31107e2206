package tokenizer

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// replacement is what an id outside the vocabulary, or a byte sequence that
// can never become valid UTF-8 in a stream, renders as.
const replacement = "\uFFFD"

// DecodeOption changes how ids render as text.
type DecodeOption func(*decodeConfig)

type decodeConfig struct {
	skipSpecial bool
}

// SkipSpecial drops control and unknown tokens (BOS, EOS, "<|im_end|>", ...)
// instead of rendering their text.
func SkipSpecial() DecodeOption {
	return func(c *decodeConfig) { c.skipSpecial = true }
}

func newDecodeConfig(opts []DecodeOption) decodeConfig {
	var c decodeConfig
	for _, o := range opts {
		o(&c)
	}
	return c
}

// buildPieces precomputes the bytes each token decodes to, following
// llama.cpp's token_to_piece: normal tokens are un-escaped (GPT-2 byte
// alphabet, or U+2581 to space), byte tokens become their byte, control,
// unknown and user-defined tokens are their text, and unused or undefined
// tokens render as nothing.
func (t *Tokenizer) buildPieces() []string {
	pieces := make([]string, len(t.tokens))
	var inverse map[rune]byte
	if t.kind == modelBPE {
		inverse = make(map[rune]byte, 256)
		for b, r := range t.bpe.byteRune {
			inverse[r] = byte(b)
		}
	}
	buf := make([]byte, 0, 64)
	for id, text := range t.tokens {
		switch t.types[id] {
		case TypeNormal:
			if t.kind == modelSPM {
				pieces[id] = unescapeSPM(text)
				continue
			}
			buf = buf[:0]
			for _, r := range text {
				if b, ok := inverse[r]; ok {
					buf = append(buf, b)
				} else {
					buf = utf8.AppendRune(buf, r)
				}
			}
			pieces[id] = string(buf)
		case TypeByte:
			if b, ok := parseByteToken(text); ok && t.kind == modelSPM {
				pieces[id] = string([]byte{b})
			}
		case TypeControl, TypeUnknown, TypeUserDefined:
			pieces[id] = text
		}
	}
	return pieces
}

// parseByteToken parses "<0xNN>".
func parseByteToken(s string) (byte, bool) {
	if len(s) != 6 || !strings.HasPrefix(s, "<0x") || s[5] != '>' {
		return 0, false
	}
	v, err := strconv.ParseUint(s[3:5], 16, 8)
	if err != nil {
		return 0, false
	}
	return byte(v), true
}

func (t *Tokenizer) isSpecialType(id int32) bool {
	typ := t.types[id]
	return typ == TypeControl || typ == TypeUnknown
}

// appendPiece appends what id renders as; ok is false for ids outside the
// vocabulary, which render as U+FFFD.
func (t *Tokenizer) appendPiece(dst []byte, id int32, c decodeConfig) []byte {
	if id < 0 || int(id) >= len(t.pieces) {
		return append(dst, replacement...)
	}
	if c.skipSpecial && t.isSpecialType(id) {
		return dst
	}
	return append(dst, t.pieces[id]...)
}

// Decode renders ids as text. The result holds the exact bytes the tokens
// stand for (which need not be valid UTF-8: generation may stop inside a
// character), so Decode(Encode(s)) == s for valid UTF-8 s. Ids outside the
// vocabulary render as U+FFFD. For SentencePiece
// vocabularies that prefix a space, the space Encode added in front of the
// first word is removed again (a leading BOS does not count as the first
// word).
func (t *Tokenizer) Decode(ids []int32, opts ...DecodeOption) string {
	c := newDecodeConfig(opts)
	buf := make([]byte, 0, len(ids)*4)
	strip := t.kind == modelSPM && t.addSpacePrefix
	for i, id := range ids {
		if i == 0 && id == t.bos && id >= 0 {
			buf = t.appendPiece(buf, id, c)
			continue
		}
		start := len(buf)
		buf = t.appendPiece(buf, id, c)
		if strip {
			if len(buf) > start && buf[start] == ' ' {
				buf = append(buf[:start], buf[start+1:]...)
			}
			strip = false
		}
	}
	return string(buf)
}

// Decoder renders a stream of generated ids as text, returning only complete
// UTF-8: a character split across tokens (byte tokens, or a byte-level token
// ending inside a multi-byte sequence) is held back until it completes. A
// Decoder is used by one goroutine at a time.
type Decoder struct {
	t       *Tokenizer
	cfg     decodeConfig
	pending []byte
}

// NewDecoder starts a streaming decoder. Unlike Decode it never strips a
// leading space: generated tokens continue a prompt.
func (t *Tokenizer) NewDecoder(opts ...DecodeOption) *Decoder {
	return &Decoder{t: t, cfg: newDecodeConfig(opts)}
}

// Add decodes one id and returns the text that became complete. Bytes that
// can never form valid UTF-8 are returned as U+FFFD, so every string Add and
// Flush return is valid UTF-8.
func (d *Decoder) Add(id int32) string {
	d.pending = d.t.appendPiece(d.pending, id, d.cfg)
	var out []byte
	i := 0
	for i < len(d.pending) {
		rest := d.pending[i:]
		if !utf8.FullRune(rest) {
			break // an incomplete sequence that later bytes may complete
		}
		r, n := utf8.DecodeRune(rest)
		if r == utf8.RuneError && n == 1 {
			out = append(out, replacement...)
		} else {
			out = append(out, rest[:n]...)
		}
		i += n
	}
	if i == 0 {
		return ""
	}
	d.pending = append(d.pending[:0], d.pending[i:]...)
	return string(out)
}

// Flush returns what is still held back, with incomplete sequences replaced
// by U+FFFD, and resets the decoder. Call it when the stream ends.
func (d *Decoder) Flush() string {
	s := strings.ToValidUTF8(string(d.pending), replacement)
	d.pending = d.pending[:0]
	return s
}

// Pending reports how many bytes are held back waiting for more tokens.
func (d *Decoder) Pending() int { return len(d.pending) }
