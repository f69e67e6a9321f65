package strictyaml

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The project decodes YAML with go.yaml.in/yaml/v3, the maintained fork; gopkg.in/yaml.v3
// is archived. No Go file of the repository imports it (a branch written before the switch
// would bring it back on merge).
const archived = "gopkg.in/yaml.v3"

func TestRepositoryUsesMaintainedYAML(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (strings.HasPrefix(d.Name(), ".") || d.Name() == "build") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if imp.Path.Value == strconv.Quote(archived) {
				t.Errorf("%s imports %s (archived): use go.yaml.in/yaml/v3", path, archived)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(root, "go.mod")); err != nil || strings.Contains(string(b), archived+" ") {
		t.Errorf("go.mod requires %s (%v)", archived, err)
	}
}
