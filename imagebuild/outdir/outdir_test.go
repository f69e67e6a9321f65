package outdir

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCommitReplacesAtomically(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img")
	for i, content := range []string{"first", "second"} {
		d, err := Begin(out, "manifest.json")
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(d.Path("manifest.json"), []byte(content), 0o644)
		if i == 1 {
			// Until Commit, the previous build is what is there.
			if b, _ := os.ReadFile(filepath.Join(out, "manifest.json")); string(b) != "first" {
				t.Errorf("before commit: %q", b)
			}
		}
		if err := d.Commit(); err != nil {
			t.Fatal(err)
		}
		d.Abort()
		if b, _ := os.ReadFile(filepath.Join(out, "manifest.json")); string(b) != content {
			t.Errorf("after commit %d: %q", i, b)
		}
	}
	left, _ := filepath.Glob(filepath.Join(filepath.Dir(out), ".img.building-*"))
	if len(left) != 0 {
		t.Errorf("temporary directories left: %v", left)
	}
}

func TestAbortLeavesNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img")
	d, err := Begin(out, "manifest.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(d.Path("half-written"), []byte("x"), 0o644)
	d.Abort()
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Errorf("left behind: %v", ents)
	}
}

func TestRefusesForeignDirectory(t *testing.T) {
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "precious"), []byte("x"), 0o644)
	if _, err := Begin(out, "manifest.json"); err == nil || !strings.Contains(err.Error(), "not replacing it") {
		t.Errorf("foreign directory: %v", err)
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := Begin(f, "manifest.json"); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file: %v", err)
	}
	if _, err := Begin(filepath.Join(f, "sub"), "manifest.json"); err == nil {
		t.Error("output below a file accepted")
	}
}
