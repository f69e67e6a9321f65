package insmod

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestInsertRefuses: a missing file and a file that is not a module are errors that name
// the file and keep the kernel's reason (loading a real module needs a kernel with module
// support, which the appliance and desktop VM tests boot).
func TestInsertRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := Insert(filepath.Join(dir, "missing.ko")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	junk := filepath.Join(dir, "junk.ko")
	if err := os.WriteFile(junk, []byte("not an ELF module"), 0o644); err != nil {
		t.Fatal(err)
	}
	err := Insert(junk)
	if err == nil {
		t.Fatal("a file that is not a module was loaded")
	}
	// ENOEXEC for a bad module; ENOSYS or EPERM where the kernel has no module support or
	// the test lacks CAP_SYS_MODULE.
	if !errors.Is(err, unix.ENOEXEC) && !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EPERM) && !errors.Is(err, unix.EINVAL) {
		t.Errorf("junk module: %v", err)
	}
}
