package tokenizer

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/tandemserve/tandem/model/gguf"
)

// Model locations: SmolLM2 through TANDEM_MODEL, stories260K beside the
// project.
func smolLM2Path() string { return os.Getenv("TANDEM_MODEL") }

func storiesPath() string {
	return filepath.Join("..", "..", "..", "shared", "models", "stories260K.gguf")
}

// loadTokenizer builds a Tokenizer from a GGUF file, skipping the test when
// the file is absent.
func loadTokenizer(tb testing.TB, path, what string) *Tokenizer {
	tb.Helper()
	if path == "" {
		tb.Skipf("%s: set TANDEM_MODEL to the SmolLM2-135M-Instruct GGUF to run this test", what)
	}
	if _, err := os.Stat(path); err != nil {
		tb.Skipf("%s: model file not available (%v)", what, err)
	}
	f, err := gguf.Open(path)
	if err != nil {
		tb.Fatalf("open %s: %v", path, err)
	}
	defer f.Close()
	tok, err := FromGGUF(f)
	if err != nil {
		tb.Fatalf("FromGGUF(%s): %v", path, err)
	}
	return tok
}
