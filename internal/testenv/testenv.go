// Package testenv is how the project's tests find the real components they need (root, a
// running libvirtd, the built desktop image) and what they do without them: outside CI they
// skip and say why; in CI (CI=true) nothing the issues ask for may skip, so they fail.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// CI reports whether the tests run in CI.
func CI() bool { return os.Getenv("CI") == "true" }

// Missing skips t (outside CI) or fails it (in CI) because what is missing.
func Missing(t testing.TB, what string) {
	t.Helper()
	if CI() {
		t.Fatalf("CI=true and %s; `make test` provides it", what)
	}
	t.Skipf("skipped: %s (run `make test`, which provides it)", what)
}

// Root requires uid 0.
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "the test needs root")
	}
}

// RepoRoot is the repository's top directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// LibvirtSocket returns the socket of the libvirtd that `make test` starts
// (scripts/libvirtrun), or DESKHOST_LIBVIRT_SOCKET.
func LibvirtSocket(t testing.TB) string {
	t.Helper()
	Root(t)
	s := os.Getenv("DESKHOST_LIBVIRT_SOCKET")
	if s == "" {
		s = "/run/deskhost/libvirt/run/libvirt-sock"
	}
	if _, err := os.Stat(s); err != nil {
		Missing(t, "libvirtd is not running at "+s+" (bin/libvirtrun start --root /run/deskhost/libvirt)")
	}
	return s
}

// DesktopImage returns the directory of the built desktop image (make image), or
// DESKHOST_IMAGE.
func DesktopImage(t testing.TB) string {
	t.Helper()
	d := os.Getenv("DESKHOST_IMAGE")
	if d == "" {
		d = filepath.Join(RepoRoot(), "build", "images", "desktop")
	}
	if _, err := os.Stat(filepath.Join(d, "image.json")); err != nil {
		Missing(t, "the desktop image is not built at "+d+" (make image)")
	}
	return d
}

// Bridge creates a Linux bridge named name in the host's network namespace for the test's
// lifetime: the bridges WorkSpace NICs attach to until netcfg owns them. No address, no
// uplink: nothing the guests send leaves the bridge.
func Bridge(t testing.TB, name string) {
	t.Helper()
	Root(t)
	_ = exec.Command("ip", "link", "del", name).Run() // left by a killed run
	if out, err := exec.Command("ip", "link", "add", name, "type", "bridge").CombinedOutput(); err != nil {
		t.Fatalf("create bridge %s: %v: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "link", "set", name, "up").CombinedOutput(); err != nil {
		t.Fatalf("bring up bridge %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", name).Run() })
}
