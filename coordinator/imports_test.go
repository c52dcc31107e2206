package coordinator

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImportDirection keeps the control plane independent of the data plane: coordinator
// packages may import each other and the generated API, never engine, model, kernels, workers,
// the gateway or the transport (those depend on the coordinator's client, not the reverse).
func TestImportDirection(t *testing.T) {
	const module = "github.com/tandemserve/tandem/"
	allowed := []string{module + "coordinator", module + "proto/coordinator/"}
	fset := token.NewFileSet()
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if !strings.HasPrefix(p, module) {
				continue
			}
			ok := false
			for _, a := range allowed {
				ok = ok || strings.HasPrefix(p, a)
			}
			if !ok {
				t.Errorf("%s imports %s: coordinator packages must not depend on the data plane", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
