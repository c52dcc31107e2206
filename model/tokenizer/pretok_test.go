package tokenizer

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func splitWith(t *testing.T, name, text string) []string {
	t.Helper()
	p, err := newPreTokenizer(name)
	if err != nil {
		t.Fatalf("newPreTokenizer(%q): %v", name, err)
	}
	return append([]string(nil), p.split(text, nil, nil)...)
}

// TestPreTokenizerReference compares every scanner with the pieces Python's
// regex module produces from llama.cpp's expressions on the whole corpus.
func TestPreTokenizerReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "tokenizer", "pretok.json"))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	var f struct {
		Cases []struct {
			Text   string              `json:"text"`
			Pieces map[string][]string `json:"pieces"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("parse fixture: %v", err)
	}
	if len(f.Cases) < 300 {
		t.Fatalf("fixture has %d cases, want >= 300", len(f.Cases))
	}
	for i, c := range f.Cases {
		names := make([]string, 0, len(c.Pieces))
		for name := range c.Pieces {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			got := splitWith(t, name, c.Text)
			if diff := cmp.Diff(c.Pieces[name], got, cmpEmptyStrings()); diff != "" {
				t.Errorf("case %d %s %q (-want +got):\n%s", i, name, c.Text, diff)
			}
		}
	}
}

func cmpEmptyStrings() cmp.Option {
	return cmp.FilterValues(func(a, b []string) bool { return len(a) == 0 && len(b) == 0 }, cmp.Ignore())
}

// TestPreTokenizerRules pins the lookahead and ordering rules with readable
// examples.
func TestPreTokenizerRules(t *testing.T) {
	tests := []struct {
		name, pre, text string
		want            []string
	}{
		{"space joins following word", "gpt2", "a  b", []string{"a", " ", " b"}},
		{"trailing run kept whole", "gpt2", "a   ", []string{"a", "   "}},
		{"newline before word stands alone", "gpt2", "a\n\nb", []string{"a", "\n", "\n", "b"}},
		{"contractions case-sensitive in gpt2", "gpt2", "I'M it's", []string{"I", "'", "M", " it", "'s"}},
		{"digits split individually in smollm", "smollm", "x 2024", []string{"x", " ", "2", "0", "2", "4"}},
		{"three-digit groups in llama3", "llama3", "1234567", []string{"123", "456", "7"}},
		{"single digits in qwen2", "qwen2", "123", []string{"1", "2", "3"}},
		{"contractions case-insensitive in llama3", "llama3", "I'M", []string{"I", "'M"}},
		{"punctuation prefix joins word in llama3", "llama3", "(hello", []string{"(hello"}},
		{"newlines kept with whitespace in llama3", "llama3", "a \n\n b", []string{"a", " \n\n", " b"}},
		{"default splits punctuation first", "default", "a,b 1234", []string{"a", ",", "b", " ", "123", "4"}},
		{"invalid byte is other", "gpt2", "a\xffb", []string{"a", "\xff", "b"}},
		{"replacement character is other", "gpt2", "a\uFFFDb", []string{"a", "\uFFFD", "b"}},
		{"empty", "gpt2", "", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := splitWith(t, tt.pre, tt.text)
			if diff := cmp.Diff(tt.want, got, cmpEmptyStrings()); diff != "" {
				t.Errorf("split(%q) (-want +got):\n%s", tt.text, diff)
			}
		})
	}
}

func TestUnknownPreTokenizer(t *testing.T) {
	_, err := newPreTokenizer("no-such-pre")
	if !errors.Is(err, ErrUnknownPreTokenizer) {
		t.Fatalf("err = %v, want ErrUnknownPreTokenizer", err)
	}
	if err == nil || !strings.Contains(err.Error(), "no-such-pre") {
		t.Errorf("error %q does not name the pre-tokenizer", err)
	}
}
