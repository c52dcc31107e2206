package transport_test

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The transport is independent of the engine: its packages may import only
// the standard library, third-party modules, kernels (for KVSpec/KVCache),
// the transport protobufs and each other.
func TestImports_TransportStaysIndependent(t *testing.T) {
	const module = "github.com/tandemserve/tandem/"
	allowed := func(p string) bool {
		return p == module+"kernels" || p == module+"transport" ||
			strings.HasPrefix(p, module+"transport/") || strings.HasPrefix(p, module+"proto/transport/")
	}
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if strings.HasPrefix(p, module) && !allowed(p) {
				t.Errorf("%s imports %s", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
