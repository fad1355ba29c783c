package controllers_test

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps design.md's rule: controllers and its sub-packages
// import nothing of skiff's but proto (and each other).
func TestImports(t *testing.T) {
	const module = "github.com/skiff-sh/skiff/"
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			rest, ok := strings.CutPrefix(p, module)
			if !ok {
				continue
			}
			if rest != "proto" && rest != "controllers" && !strings.HasPrefix(rest, "controllers/") {
				t.Errorf("%s imports %s: controllers may import only proto", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
