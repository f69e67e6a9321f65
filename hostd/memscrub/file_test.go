package memscrub

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestHoldFile: a held file is zeroed in place after it is unlinked — the blocks the
// marker was in read zero through the held descriptor — and Close refuses until then.
func TestHoldFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ws.save")
	data := bytes.Repeat(marker, 3<<20/len(marker))
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	h, err := HoldFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(p); err != nil { // as libvirt does after a restore
		t.Fatal(err)
	}
	if n, err := h.Count(marker); err != nil || n != int64(len(data)/len(marker)) {
		t.Fatalf("%d markers in the held file (%v), want %d", n, err, len(data)/len(marker))
	}
	if err := h.Close(); err == nil {
		t.Fatal("Close of an unzeroed file succeeded")
	}
	st, err := h.Zero()
	if err != nil {
		t.Fatal(err)
	}
	if st.Populated != int64(len(data)) {
		t.Errorf("zeroed %d bytes, want %d", st.Populated, len(data))
	}
	if n, err := h.Count(marker); err != nil || n != 0 {
		t.Fatalf("%d markers after Zero (%v)", n, err)
	}
	if off, err := h.NonZero(); err != nil || off != -1 {
		t.Fatalf("first non-zero byte after Zero at %d (%v)", off, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := HoldFile(p); err == nil {
		t.Error("HoldFile of a missing file succeeded")
	}
	if _, err := HoldFile(filepath.Dir(p)); err == nil {
		t.Error("HoldFile of a directory succeeded")
	}
}
