package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tandemserve/tandem/engine/sample"
	"github.com/tandemserve/tandem/kernels/backends"
	"github.com/tandemserve/tandem/model"
	"github.com/tandemserve/tandem/model/llama"
)

func defaultModel(t *testing.T) string {
	t.Helper()
	p := model.DefaultPath()
	if _, err := os.Stat(p); err != nil {
		t.Skipf("default model not found at %s (run scripts/fetch-model.sh): %v", p, err)
	}
	return p
}

func TestGenerateAnswersParis(t *testing.T) {
	path := defaultModel(t)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"generate", "--model", path, "--chat", "--prompt", "What is the capital of France?", "--temperature", "0", "--max-tokens", "24"}, &out, &errOut)
	if err != nil {
		t.Fatalf("generate: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), "Paris") {
		t.Fatalf("answer %q does not mention Paris", out.String())
	}
	if !strings.Contains(errOut.String(), "prefill:") || !strings.Contains(errOut.String(), "tokens/s") {
		t.Fatalf("stderr %q lacks the throughput report", errOut.String())
	}
}

func TestGenerateRejectsBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "absent.gguf")
	garbage := filepath.Join(t.TempDir(), "garbage.gguf")
	if err := os.WriteFile(garbage, []byte("GGUF\x03\x00\x00\x00 not really"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		args   []string
		target error
		text   string
	}{
		{"no prompt", []string{"generate", "--model", missing}, errUsage, ""},
		{"unknown flag", []string{"generate", "--bogus"}, errUsage, ""},
		{"unknown backend", []string{"generate", "--model", missing, "--backend", "tpu", "--prompt", "x"}, backends.ErrUnknown, ""},
		{"missing model", []string{"generate", "--model", missing, "--prompt", "x"}, nil, "absent.gguf"},
		{"corrupt model", []string{"generate", "--model", garbage, "--prompt", "x"}, nil, "garbage.gguf"},
		{"bad kv dtype", []string{"generate", "--model", missing, "--prompt", "x", "--kv-dtype", "f8"}, nil, "KV cache dtype"},
		{"unknown command", []string{"frobnicate"}, errUsage, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(context.Background(), tt.args, &out, &errOut)
			if err == nil {
				t.Fatal("run succeeded")
			}
			if tt.target != nil && !errors.Is(err, tt.target) {
				t.Fatalf("run = %v, want %v", err, tt.target)
			}
			if tt.text != "" && !strings.Contains(err.Error(), tt.text) {
				t.Fatalf("run = %v, want a message mentioning %q", err, tt.text)
			}
		})
	}
}

func TestGenerateRejectsInvalidSampling(t *testing.T) {
	path := defaultModel(t)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"generate", "--model", path, "--prompt", "hi", "--temperature", "-1"}, &out, &errOut)
	if !errors.Is(err, sample.ErrInvalidParams) || !strings.Contains(err.Error(), "temperature") {
		t.Fatalf("run = %v, want ErrInvalidParams naming temperature", err)
	}
}

// A model split three ways (SmolLM2 has 9 heads and 3 KV heads) generates
// the same greedy text as the whole model; a split the shapes do not allow
// is refused with a clear error.
func TestGenerateTensorParallel(t *testing.T) {
	path := defaultModel(t)
	gen := func(tp string) string {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"generate", "--model", path, "--chat", "--prompt", "Explain gravity in one sentence.", "--max-tokens", "24", "--tp", tp}, &out, &errOut)
		if err != nil {
			t.Fatalf("generate --tp %s: %v\n%s", tp, err, errOut.String())
		}
		return out.String()
	}
	if one, three := gen("1"), gen("3"); one != three {
		t.Fatalf("--tp 3 generated %q, --tp 1 %q", three, one)
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"generate", "--model", path, "--prompt", "hi", "--tp", "2"}, &out, &errOut)
	if !errors.Is(err, llama.ErrTPShape) {
		t.Fatalf("--tp 2 = %v, want ErrTPShape", err)
	}
}
