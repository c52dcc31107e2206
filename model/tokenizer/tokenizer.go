// Package tokenizer turns text into token ids and back for the models Tandem
// serves, and renders chat conversations into prompt text.
//
// A Tokenizer is built from the tokenizer metadata a GGUF file carries (Vocab)
// and reproduces llama.cpp's behaviour for the two vocabulary kinds Llama-family
// models use:
//
//   - "gpt2": byte-level BPE. The text is first cut into pieces by a
//     pre-tokenizer chosen by tokenizer.ggml.pre (hand-written scanners that
//     follow the regular expressions llama.cpp names, lookahead included), each
//     piece's bytes are mapped to GPT-2's printable byte alphabet, and adjacent
//     symbols are merged by merge rank, lowest rank first.
//   - "llama": SentencePiece-style BPE. Spaces become U+2581, a space is
//     prefixed when tokenizer.ggml.add_space_prefix says so, adjacent symbols
//     are merged by token score, highest first, and bytes with no token fall
//     back to <0xNN> byte tokens.
//
// Special tokens (control, user-defined and unknown types) are cut out of the
// text before either algorithm runs, longest token text first, as llama.cpp
// does. Control and unknown tokens are only recognised when the caller asks
// for it (EncodeOptions.ParseSpecial), because prompt text from a client must
// not be able to forge them; user-defined tokens are always recognised.
//
// Chat templates are Jinja source in the GGUF file. The package does not
// interpret Jinja: it recognises the template family (ChatML, Llama-3,
// Llama-2, Zephyr) and renders it in Go exactly as the template would.
// EncodeChat tokenizes a conversation so that only the template's own
// markers become control tokens, never text inside a message.
//
// Decoding maps ids back to bytes. Ids come from the network, so an id outside
// the vocabulary never panics: it renders as U+FFFD. A Decoder decodes a token
// stream incrementally and only ever returns complete UTF-8.
//
// A Tokenizer is immutable after New and safe for concurrent use.
package tokenizer

import (
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Sentinel errors. Every error this package returns wraps one of them.
var (
	// ErrInvalidVocab reports tokenizer metadata that cannot describe a
	// working tokenizer (mismatched array lengths, ids out of range, ...).
	ErrInvalidVocab = errors.New("tokenizer: invalid vocabulary")
	// ErrUnsupportedModel reports a tokenizer.ggml.model this package does
	// not implement.
	ErrUnsupportedModel = errors.New("tokenizer: unsupported tokenizer model")
	// ErrUnknownPreTokenizer reports a tokenizer.ggml.pre name with no
	// pre-tokenizer here.
	ErrUnknownPreTokenizer = errors.New("tokenizer: unknown pre-tokenizer")
	// ErrNoChatTemplate reports a chat template that cannot be rendered: the
	// file has none, or one of a family this package does not recognise, and
	// the vocabulary has no ChatML tokens to fall back on.
	ErrNoChatTemplate = errors.New("tokenizer: no usable chat template")
	// ErrInvalidMessage reports a conversation the chat template rejects
	// (unknown role, roles out of the order the template requires).
	ErrInvalidMessage = errors.New("tokenizer: invalid chat message")
)

// TokenType is the GGUF tokenizer.ggml.token_type of a token, with
// llama.cpp's numbering.
type TokenType int32

// Token types as GGUF stores them.
const (
	TypeUndefined   TokenType = 0
	TypeNormal      TokenType = 1
	TypeUnknown     TokenType = 2
	TypeControl     TokenType = 3
	TypeUserDefined TokenType = 4
	TypeUnused      TokenType = 5
	TypeByte        TokenType = 6
)

// Vocab is the tokenizer metadata of a GGUF file, in plain form so that the
// tokenizer does not depend on a GGUF reader. Token ids that are absent are
// -1. Types and Scores may be empty (all tokens normal, all scores zero).
type Vocab struct {
	Model          string // tokenizer.ggml.model: "gpt2" or "llama"
	Pre            string // tokenizer.ggml.pre (gpt2 only); empty means "default"
	Tokens         []string
	Types          []int32
	Scores         []float32
	Merges         []string // "left right", rank = index (gpt2 only)
	BOS, EOS       int32
	UNK, PAD       int32
	AddBOS         bool
	AddEOS         bool
	AddSpacePrefix bool
	ChatTemplate   string
	// EOG lists further end-of-generation ids the file names
	// (tokenizer.ggml.eot_token_id, eom_token_id); nil when none.
	EOG []int32
}

// EncodeOptions control one Encode call.
type EncodeOptions struct {
	// AddBOS prepends the BOS token when the vocabulary has one.
	AddBOS bool
	// ParseSpecial recognises control and unknown token texts (such as
	// "<|im_start|>") in the input; when false they are tokenized as plain
	// text. Set it only for text the server itself produced, such as a
	// rendered chat template.
	ParseSpecial bool
}

type modelKind int

const (
	modelBPE modelKind = iota + 1 // byte-level BPE ("gpt2")
	modelSPM                      // SentencePiece-style BPE ("llama")
)

// Tokenizer encodes and decodes text for one vocabulary. It is immutable after
// New and safe for concurrent use.
type Tokenizer struct {
	kind   modelKind
	tokens []string
	types  []TokenType
	scores []float32
	toID   map[string]int32
	// pieces[id] is the byte string token id decodes to (for control and
	// unknown tokens: their text); precomputed so decoding is a copy.
	pieces []string

	bos, eos, unk, pad int32
	addBOS, addEOS     bool
	addSpacePrefix     bool

	// specials are the ids of control, user-defined and unknown tokens,
	// longest text first: the order llama.cpp partitions text in.
	specials []int32
	eog      map[int32]struct{}

	bpe  *bpeModel // set when kind == modelBPE
	spm  *spmModel // set when kind == modelSPM
	chat *chatTemplate

	scratch sync.Pool // *bpeScratch or *spmScratch, reused across Encode calls
}

// New builds a Tokenizer from GGUF tokenizer metadata.
func New(v Vocab) (*Tokenizer, error) {
	n := len(v.Tokens)
	if n == 0 {
		return nil, fmt.Errorf("%w: no tokens", ErrInvalidVocab)
	}
	if n > 1<<30 {
		return nil, fmt.Errorf("%w: %d tokens", ErrInvalidVocab, n)
	}
	if len(v.Types) != 0 && len(v.Types) != n {
		return nil, fmt.Errorf("%w: %d token types for %d tokens", ErrInvalidVocab, len(v.Types), n)
	}
	if len(v.Scores) != 0 && len(v.Scores) != n {
		return nil, fmt.Errorf("%w: %d scores for %d tokens", ErrInvalidVocab, len(v.Scores), n)
	}
	for _, id := range []struct {
		name string
		id   int32
	}{{"bos", v.BOS}, {"eos", v.EOS}, {"unk", v.UNK}, {"pad", v.PAD}} {
		if id.id < -1 || int(id.id) >= n {
			return nil, fmt.Errorf("%w: %s token id %d outside [-1, %d)", ErrInvalidVocab, id.name, id.id, n)
		}
	}
	for _, id := range v.EOG {
		if id < 0 || int(id) >= n {
			return nil, fmt.Errorf("%w: end-of-generation id %d outside [0, %d)", ErrInvalidVocab, id, n)
		}
	}
	t := &Tokenizer{
		tokens:         slices.Clone(v.Tokens),
		types:          make([]TokenType, n),
		scores:         make([]float32, n),
		toID:           make(map[string]int32, n),
		bos:            v.BOS,
		eos:            v.EOS,
		unk:            v.UNK,
		pad:            v.PAD,
		addBOS:         v.AddBOS,
		addEOS:         v.AddEOS,
		addSpacePrefix: v.AddSpacePrefix,
	}
	copy(t.scores, v.Scores)
	for i := range t.types {
		t.types[i] = TypeNormal
		if len(v.Types) != 0 {
			t.types[i] = TokenType(v.Types[i])
		}
	}
	for i, s := range v.Tokens {
		// Later duplicates win, as in llama.cpp's token_to_id map.
		t.toID[s] = int32(i)
	}
	var err error
	switch v.Model {
	case "gpt2":
		t.kind = modelBPE
		t.bpe, err = newBPEModel(t, v.Pre, v.Merges)
	case "llama":
		t.kind = modelSPM
		t.spm, err = newSPMModel(t)
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnsupportedModel, v.Model)
	}
	if err != nil {
		return nil, err
	}
	t.pieces = t.buildPieces()
	t.specials = t.collectSpecials()
	t.eog = t.collectEOG(v.EOG)
	t.chat = parseChatTemplate(v.ChatTemplate, t)
	return t, nil
}

// VocabSize is the number of tokens; valid ids are [0, VocabSize()).
func (t *Tokenizer) VocabSize() int { return len(t.tokens) }

// BOS is the beginning-of-sequence id, -1 when the vocabulary has none.
func (t *Tokenizer) BOS() int32 { return t.bos }

// EOS is the end-of-sequence id, -1 when the vocabulary has none.
func (t *Tokenizer) EOS() int32 { return t.eos }

// PAD is the padding id, -1 when the vocabulary has none.
func (t *Tokenizer) PAD() int32 { return t.pad }

// AddEOS reports whether the model expects an EOS token after the prompt
// (tokenizer.ggml.add_eos_token); Encode never adds it itself.
func (t *Tokenizer) AddEOS() bool { return t.addEOS && t.eos >= 0 }

// AddBOS reports whether the model expects a BOS token before the prompt
// (tokenizer.ggml.add_bos_token).
func (t *Tokenizer) AddBOS() bool { return t.addBOS && t.bos >= 0 }

// TokenText is the vocabulary text of id (byte-level or U+2581 form, as the
// GGUF file stores it); ok is false for ids outside the vocabulary.
func (t *Tokenizer) TokenText(id int32) (text string, ok bool) {
	if id < 0 || int(id) >= len(t.tokens) {
		return "", false
	}
	return t.tokens[id], true
}

// TokenType is the type of id; TypeUndefined for ids outside the vocabulary.
func (t *Tokenizer) TokenType(id int32) TokenType {
	if id < 0 || int(id) >= len(t.types) {
		return TypeUndefined
	}
	return t.types[id]
}

// Lookup finds the id of a token by its vocabulary text.
func (t *Tokenizer) Lookup(text string) (id int32, ok bool) {
	id, ok = t.toID[text]
	return id, ok
}

// IsEOG reports whether id ends generation: the EOS token, an id listed in
// Vocab.EOG, or a token whose text llama.cpp treats as end-of-turn ("<|im_end|>", "<|eot_id|>",
// "<|endoftext|>", "<end_of_turn>", ...).
func (t *Tokenizer) IsEOG(id int32) bool {
	_, ok := t.eog[id]
	return ok
}

// eogTexts are the token texts llama.cpp (llama-vocab.cpp) marks as
// end-of-generation whatever their type, because converted models often
// forget to set eot_token_id.
func eogTexts() []string {
	return []string{
		"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
		"<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>",
	}
}

func (t *Tokenizer) collectEOG(extra []int32) map[int32]struct{} {
	eog := make(map[int32]struct{})
	if t.eos >= 0 {
		eog[t.eos] = struct{}{}
	}
	for _, id := range extra {
		eog[id] = struct{}{}
	}
	for _, s := range eogTexts() {
		if id, ok := t.toID[s]; ok {
			eog[id] = struct{}{}
		}
	}
	return eog
}
