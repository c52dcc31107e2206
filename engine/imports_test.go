package engine_test

import (
	"go/build"
	"strings"
	"testing"
)

// TestImportDirection keeps the engine below the workers: engine packages may
// use the model and kernels, never the serving layers built on top of them.
func TestImportDirection(t *testing.T) {
	const mod = "github.com/tandemserve/tandem/"
	allowed := []string{"engine", "kernels", "model"}
	for _, dir := range []string{".", "blockhash", "kvcache", "scheduler", "sample"} {
		pkg, err := build.ImportDir(dir, 0)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, imp := range pkg.Imports {
			rest, ok := strings.CutPrefix(imp, mod)
			if !ok {
				continue
			}
			top, _, _ := strings.Cut(rest, "/")
			ok = false
			for _, a := range allowed {
				ok = ok || top == a
			}
			if !ok {
				t.Errorf("engine/%s imports %s: the engine must not depend on %s", dir, imp, top)
			}
		}
	}
}
