package main

import (
	"io"
	"os"
	"path/filepath"
	"testing"
)

func TestIsMountPoint(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	info := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"30 22 254:16 / /home rw,relatime shared:9 - ext4 /dev/vdb rw\n" +
		"31 22 0:25 / /home/alice/x rw - tmpfs tmpfs rw\n"
	if err := os.WriteFile(p, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string]bool{"/home": true, "/": true, "/hom": false, "/home/alice": false, "/sysroot": false} {
		if got := isMountPoint(p, dir); got != want {
			t.Errorf("isMountPoint(%q) = %v, want %v", dir, got, want)
		}
	}
	if isMountPoint(filepath.Join(t.TempDir(), "missing"), "/") {
		t.Error("a missing mountinfo reports a mount")
	}
}

// As a service the root volume is "/": /sysroot/PATH reaches fsPrefix/PATH, and /home is
// still /home.
func TestServiceVolumeRoot(t *testing.T) {
	base := t.TempDir()
	if err := os.MkdirAll(filepath.Join(base, "home"), 0o755); err != nil {
		t.Fatal(err)
	}
	g := &guest{log: newLogger(io.Discard), fsPrefix: base, rootMounted: true, homeMounted: true, service: true}
	if err := g.writeFile("/sysroot/etc-marker", []byte("root")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(base, "etc-marker")); err != nil || string(b) != "root" {
		t.Fatalf("root file: %q %v", b, err)
	}
	if err := g.writeFile("/home/marker", []byte("home")); err != nil {
		t.Fatal(err)
	}
	if b, err := g.readFile("/home/marker"); err != nil || string(b) != "home" {
		t.Fatalf("home file: %q %v", b, err)
	}
}
