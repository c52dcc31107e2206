package tokenizer

import (
	"slices"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/model/gguf"
)

// benchPrompt builds a prompt of mixed prose, code, numbers and non-Latin
// text from the reference corpus until it holds at least n tokens.
func benchPrompt(b *testing.B, tok *Tokenizer, n int) (string, []int32) {
	b.Helper()
	f := loadFixture(b, "smollm2.json")
	var sb strings.Builder
	for i := 0; ; i++ {
		sb.WriteString(f.Cases[i%len(f.Cases)].Text)
		sb.WriteByte('\n')
		if i%20 == 19 {
			if ids := tok.Encode(sb.String(), EncodeOptions{}); len(ids) >= n {
				return sb.String(), ids
			}
		}
	}
}

func BenchmarkEncode4K(b *testing.B) {
	tok := loadTokenizer(b, smolLM2Path(), "SmolLM2 benchmark")
	prompt, ids := benchPrompt(b, tok, 4000)
	b.SetBytes(int64(len(prompt)))
	for b.Loop() {
		tok.Encode(prompt, EncodeOptions{ParseSpecial: true})
	}
	b.ReportMetric(float64(len(ids)), "tokens")
}

// BenchmarkEncodeProse4K encodes ~4,000 tokens of ordinary English prose,
// the common shape of a chat prompt.
func BenchmarkEncodeProse4K(b *testing.B) {
	tok := loadTokenizer(b, smolLM2Path(), "SmolLM2 benchmark")
	const para = "The committee met on Tuesday to review the budget. After a long discussion, " +
		"they agreed to fund 3 new projects, including a library and a community garden. " +
		"\"We can't do everything at once,\" the chair said, \"but we'll keep trying.\"\n"
	prompt := strings.Repeat(para, 4000/len(tok.Encode(para, EncodeOptions{}))+1)
	b.SetBytes(int64(len(prompt)))
	for b.Loop() {
		tok.Encode(prompt, EncodeOptions{ParseSpecial: true})
	}
	b.ReportMetric(float64(len(tok.Encode(prompt, EncodeOptions{}))), "tokens")
}

// BenchmarkEncodeProse4KUncached runs the same prompt through the
// pre-tokenizer and the merge loop without the word cache: the cost of a
// prompt made entirely of words not seen before.
func BenchmarkEncodeProse4KUncached(b *testing.B) {
	tok := loadTokenizer(b, smolLM2Path(), "SmolLM2 benchmark")
	const para = "The committee met on Tuesday to review the budget. After a long discussion, " +
		"they agreed to fund 3 new projects, including a library and a community garden. " +
		"\"We can't do everything at once,\" the chair said, \"but we'll keep trying.\"\n"
	prompt := strings.Repeat(para, 4000/len(tok.Encode(para, EncodeOptions{}))+1)
	b.SetBytes(int64(len(prompt)))
	sc := &bpeScratch{}
	var out []int32
	for b.Loop() {
		out = out[:0]
		sc.pieces = tok.bpe.pre.split(prompt, sc.pieces, sc.tmp)
		for _, piece := range sc.pieces {
			out = tok.bpe.encodeWord(tok, piece, sc, out)
		}
	}
	if want := tok.Encode(prompt, EncodeOptions{}); !slices.Equal(out, want) {
		b.Fatalf("uncached path produced %d tokens, Encode %d", len(out), len(want))
	}
	b.ReportMetric(float64(len(out)), "tokens")
}

func BenchmarkDecode4K(b *testing.B) {
	tok := loadTokenizer(b, smolLM2Path(), "SmolLM2 benchmark")
	_, ids := benchPrompt(b, tok, 4000)
	for b.Loop() {
		tok.Decode(ids)
	}
	b.ReportMetric(float64(len(ids)), "tokens")
}

func BenchmarkDecoderStream4K(b *testing.B) {
	tok := loadTokenizer(b, smolLM2Path(), "SmolLM2 benchmark")
	_, ids := benchPrompt(b, tok, 4000)
	for b.Loop() {
		d := tok.NewDecoder()
		for _, id := range ids {
			d.Add(id)
		}
		d.Flush()
	}
	b.ReportMetric(float64(len(ids)), "tokens")
}

func BenchmarkEncodeSPM(b *testing.B) {
	tok := loadTokenizer(b, storiesPath(), "stories260K benchmark")
	text := strings.Repeat("Once upon a time, there was a little girl named Lily. She loved to play outside. ", 50)
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		tok.Encode(text, EncodeOptions{})
	}
	b.ReportMetric(float64(len(tok.Encode(text, EncodeOptions{}))), "tokens")
}

// BenchmarkNewSmolLM2 measures building the tokenizer from GGUF metadata
// (merge table, piece table), paid once per model load.
func BenchmarkNewSmolLM2(b *testing.B) {
	path := smolLM2Path()
	loadTokenizer(b, path, "SmolLM2 benchmark") // skips when absent
	g, err := gguf.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer g.Close()
	v, err := VocabFromGGUF(g)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := New(v); err != nil {
			b.Fatal(err)
		}
	}
}
