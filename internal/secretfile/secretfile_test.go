package secretfile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := Write(p, "s3cret-value"); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("Write made mode %04o, want 0600", st.Mode().Perm())
	}
	if s, err := Read(p); err != nil || s != "s3cret-value" {
		t.Fatalf("Read: %q %v", s, err)
	}
	// Group- or world-readable: refused, naming the file; the secret is not returned.
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		os.Chmod(p, mode)
		s, err := Read(p)
		if err == nil || s != "" || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %q %v", mode, s, err)
		}
		if err := Check(p); err == nil {
			t.Errorf("Check accepted mode %04o", mode)
		}
	}
	os.Chmod(p, 0o400)
	if _, err := Read(p); err != nil {
		t.Errorf("0400: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	if _, err := Read(empty); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty: %v", err)
	}
	if _, err := Read(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory: %v", err)
	}
	if _, err := Read(filepath.Join(dir, "none")); err == nil {
		t.Error("a missing file was read")
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, MaxSize+1), 0o600)
	if _, err := Read(big); err == nil || !strings.Contains(err.Error(), "larger") {
		t.Errorf("big: %v", err)
	}
}
