package memscrub

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestRemoveSavedState: the file's own blocks end up zero (read through a second link to
// the same inode, which outlives the removal) and the name is gone.
func TestRemoveSavedState(t *testing.T) {
	dir := t.TempDir()
	path, link := filepath.Join(dir, "ws.save"), filepath.Join(dir, "witness")
	marker := []byte("SAVED-RAM-MARKER-")
	data := bytes.Repeat(marker, (3<<20)/len(marker)+5) // more than one 1 MiB chunk, not a multiple
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(path, link); err != nil {
		t.Fatal(err)
	}
	n, err := RemoveSavedState(path)
	if err != nil || n != int64(len(data)) {
		t.Fatalf("RemoveSavedState: %d bytes, %v; want %d", n, err, len(data))
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the saved state is still there: %v", err)
	}
	left, err := os.ReadFile(link)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != len(data) || bytes.Count(left, marker) != 0 || len(bytes.Trim(left, "\x00")) != 0 {
		t.Fatalf("the file's blocks were not zeroed: %d bytes, %d markers", len(left), bytes.Count(left, marker))
	}
	if n, err := RemoveSavedState(path); n != 0 || err != nil {
		t.Fatalf("a missing saved state: %d, %v", n, err)
	}
}
