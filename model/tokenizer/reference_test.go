package tokenizer

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// refCase is one string of a reference fixture written by
// scripts/gen-tokenizer-fixtures.py.
type refCase struct {
	Text     string  `json:"text"`
	IDs      []int32 `json:"ids"`
	IDsPlain []int32 `json:"ids_plain"`
	Note     string  `json:"note"`
}

type refFixture struct {
	Model     string    `json:"model"`
	Reference string    `json:"reference"`
	Cases     []refCase `json:"cases"`
}

func loadFixture(t testing.TB, name string) refFixture {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizer", name))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	var f refFixture
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse fixture %s: %v", name, err)
	}
	if len(f.Cases) < 300 {
		t.Fatalf("fixture %s has %d cases, want >= 300", name, len(f.Cases))
	}
	return f
}

// TestReferenceSmolLM2 compares every corpus string with the reference ids,
// with and without special-token parsing, and checks the decode round trip.
func TestReferenceSmolLM2(t *testing.T) {
	tok := loadTokenizer(t, smolLM2Path(), "SmolLM2 reference")
	f := loadFixture(t, "smollm2.json")
	for i, c := range f.Cases {
		got := tok.Encode(c.Text, EncodeOptions{ParseSpecial: true})
		if diff := cmp.Diff(c.IDs, got, cmpEmpty()); diff != "" {
			t.Errorf("case %d %q ParseSpecial (-want +got):\n%s", i, c.Text, diff)
		}
		plain := tok.Encode(c.Text, EncodeOptions{})
		if diff := cmp.Diff(c.IDsPlain, plain, cmpEmpty()); diff != "" {
			t.Errorf("case %d %q plain (-want +got):\n%s", i, c.Text, diff)
		}
		// Bytes without a byte-level token are dropped by every reference.
		want := withoutUnencodableBytes(tok, c.Text)
		if back := tok.Decode(got); back != want {
			t.Errorf("case %d: Decode(Encode(%q)) = %q", i, c.Text, back)
		}
		if back := tok.Decode(plain); back != want {
			t.Errorf("case %d: Decode(Encode(%q, plain)) = %q", i, c.Text, back)
		}
	}
}

// TestMergeLoopsAgreeOnCorpus runs every pre-tokenized piece of the corpus
// through both merge loops (array for short pieces, heap for long ones).
func TestMergeLoopsAgreeOnCorpus(t *testing.T) {
	tok := loadTokenizer(t, smolLM2Path(), "SmolLM2 merge loops")
	f := loadFixture(t, "smollm2.json")
	sc := &bpeScratch{}
	for _, c := range f.Cases {
		for _, piece := range tok.bpe.pre.split(c.Text, nil, nil) {
			small := tok.bpe.encodeSmallWord(tok, piece, sc, nil)
			heap := tok.bpe.encodeHeapWord(tok, piece, sc, nil)
			if !slices.Equal(small, heap) {
				t.Errorf("piece %q: array loop %v, heap loop %v", piece, small, heap)
			}
		}
	}
}

// TestReferenceStories260K compares the SentencePiece path with the
// sentencepiece library's ids (no BOS, special tokens as text).
func TestReferenceStories260K(t *testing.T) {
	tok := loadTokenizer(t, storiesPath(), "stories260K reference")
	f := loadFixture(t, "stories260k.json")
	for i, c := range f.Cases {
		got := tok.Encode(c.Text, EncodeOptions{})
		if diff := cmp.Diff(c.IDs, got, cmpEmpty()); diff != "" {
			t.Errorf("case %d %q (-want +got):\n%s", i, c.Text, diff)
		}
	}
}

// cmpEmpty treats nil and empty id slices as equal.
func cmpEmpty() cmp.Option {
	return cmp.FilterValues(func(a, b []int32) bool { return len(a) == 0 && len(b) == 0 }, cmp.Ignore())
}
