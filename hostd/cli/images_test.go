package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/internal/desktopimage"
)

// TestCLIImageCommands: images create, copy and import over hostd's socket, as an operator
// types them, with their refusals.
func TestCLIImageCommands(t *testing.T) {
	requireRoot(t, "hostd's socket accepts only root peers")
	f := newFixture(t)
	dir := t.TempDir()
	for _, n := range []string{"vmlinux", "initrd.img", "root.qcow2"} {
		os.WriteFile(filepath.Join(dir, n), []byte(n), 0o644)
	}
	if _, err := desktopimage.WriteManifest(dir, desktopimage.Manifest{Name: "desktop", OS: "linux", Kernel: "vmlinux", Initrd: "initrd.img", Root: "root.qcow2"}); err != nil {
		t.Fatal(err)
	}
	run := func(wantCode int, want string, args ...string) string {
		t.Helper()
		code, out, errs := f.cli(args...)
		if code != wantCode || !strings.Contains(out+errs, want) {
			t.Fatalf("hostd %s: %d %q %q, want exit %d with %q", strings.Join(args, " "), code, out, errs, wantCode, want)
		}
		return strings.TrimSpace(out)
	}
	base := run(0, "wsi-", "images", "register", "--dir", dir, "--name", "base")
	copied := run(0, "wsi-", "images", "copy", base, "--name", "base-copy")
	run(0, "base-copy", "images")
	run(1, "ResourceNotFoundException", "images", "create", "ws-0000000000", "--name", "golden", "--description", "golden")
	run(2, "--name and --description are required", "images", "create", "ws-0000000000")
	run(1, "neither an absolute path nor an http(s) URL", "images", "import", "--source", "disk.qcow2", "--name", "byol", "--description", "byol")
	out := run(0, "PENDING", "images", "import", "--source", filepath.Join(dir, "root.qcow2"), "--name", "byol", "--description", "byol", "--base", base)
	run(0, "PENDING", "images")
	run(1, "InvalidResourceStateException", "images", "delete", strings.Fields(out)[0][:len(strings.Fields(out)[0])-1])
	run(0, "deleted", "images", "delete", strings.Fields(copied)[0])
}
