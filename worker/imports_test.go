package worker_test

import (
	"go/build"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/tandemserve/tandem/"

// TestImportDirection checks the layering the serving packages rely on: the
// engine, model, kernels, transport and generated protobuf code never import
// the serving layer (gateway, worker, prefill, decode, metrics).
func TestImportDirection(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Dir(filepath.Dir(file))
	serving := []string{"gateway", "worker", "prefill", "decode", "metrics", "cmd"}
	lower := []string{"engine", "engine/kvcache", "engine/scheduler", "engine/sample", "engine/blockhash",
		"model", "model/llama", "model/tokenizer", "model/gguf", "kernels", "transport", "proto/tandem/v1"}
	for _, start := range lower {
		t.Run(start, func(t *testing.T) {
			seen := map[string]bool{}
			var walk func(pkg, from string)
			walk = func(pkg, from string) {
				if seen[pkg] {
					return
				}
				seen[pkg] = true
				rel := strings.TrimPrefix(pkg, module)
				for _, s := range serving {
					if rel == s || strings.HasPrefix(rel, s+"/") {
						t.Errorf("%s imports %s (via %s)", start, pkg, from)
						return
					}
				}
				p, err := build.Import(pkg, root, 0)
				if err != nil {
					t.Fatalf("import %s: %v", pkg, err)
				}
				for _, imp := range p.Imports {
					if strings.HasPrefix(imp, module) {
						walk(imp, pkg)
					}
				}
			}
			walk(module+start, "")
			if len(seen) == 0 {
				t.Fatal("nothing walked")
			}
		})
	}
}
