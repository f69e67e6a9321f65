package disk

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/partition/gpt"

	"deskhost/internal/testenv"
)

func build(t *testing.T, dir string) (string, *Layout) {
	t.Helper()
	if _, err := os.Stat(DefaultSystemdBoot); err != nil {
		testenv.Missing(t, DefaultSystemdBoot+" (package systemd-boot-efi) is not installed")
	}
	kernel := filepath.Join(dir, "vmlinuz")
	initrd := filepath.Join(dir, "initrd.img")
	os.WriteFile(kernel, bytes.Repeat([]byte("K"), 3<<20+5), 0o644)
	os.WriteFile(initrd, bytes.Repeat([]byte("I"), 7<<20+3), 0o644)
	out := filepath.Join(dir, "disk.img")
	lay, err := Build(out, Options{Size: 160 << 20, ESPSize: 64 << 20, Kernel: kernel, Initrd: initrd,
		Cmdline: "console=ttyS0 init_on_free=1", Title: "deskhost test", Time: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)})
	if err != nil {
		t.Fatal(err)
	}
	return out, lay
}

func TestBuild(t *testing.T) {
	dir := t.TempDir()
	out, lay := build(t, dir)
	d, err := diskfs.Open(out, diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	pt, err := d.GetPartitionTable()
	if err != nil {
		t.Fatal(err)
	}
	parts := pt.(*gpt.Table).Partitions
	if len(parts) != 2 || parts[0].Type != gpt.EFISystemPartition || parts[1].Name != PermLabel || parts[1].Type != gpt.LinuxFilesystem {
		t.Fatalf("partitions: %+v", parts)
	}
	fs, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	read := func(p string) string {
		f, err := fs.Open(p)
		if err != nil {
			t.Fatalf("ESP %s: %v", p, err)
		}
		b, _ := io.ReadAll(f)
		return string(b)
	}
	if e := read("/loader/entries/deskhost.conf"); !strings.Contains(e, "options console=ttyS0 init_on_free=1") || !strings.Contains(e, "initrd  /deskhost/initrd.img") {
		t.Errorf("loader entry:\n%s", e)
	}
	if !strings.Contains(read("/loader/loader.conf"), "timeout 0") {
		t.Error("loader.conf has no timeout 0")
	}
	if got := read("/deskhost/initrd.img"); len(got) != 7<<20+3 {
		t.Errorf("initrd on the ESP: %d bytes", len(got))
	}
	boot, _ := os.ReadFile(DefaultSystemdBoot)
	if read("/EFI/BOOT/BOOTX64.EFI") != string(boot) {
		t.Error("BOOTX64.EFI is not systemd-boot")
	}
	// /perm is blank: init formats it on the first boot.
	f, _ := os.Open(out)
	defer f.Close()
	buf := make([]byte, 1<<20)
	f.ReadAt(buf, lay.PermStart)
	if !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Error("the /perm partition is not blank")
	}
	// Same inputs, same bytes.
	out2, _ := build(t, t.TempDir())
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(out2)
	if !bytes.Equal(a, b) {
		t.Error("two builds of the same inputs differ")
	}
}

func TestBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := Build(filepath.Join(dir, "d.img"), Options{Size: 160 << 20, ESPSize: 64 << 20, Kernel: filepath.Join(dir, "none"), Initrd: filepath.Join(dir, "none")}); err == nil || !strings.Contains(err.Error(), "kernel") {
		t.Errorf("missing kernel: %v", err)
	}
	k := filepath.Join(dir, "k")
	os.WriteFile(k, []byte("k"), 0o644)
	if _, err := Build(filepath.Join(dir, "d.img"), Options{Size: 100 << 20, ESPSize: 64 << 20, Kernel: k, Initrd: k}); err == nil || !strings.Contains(err.Error(), "/perm") {
		t.Errorf("too small for /perm: %v", err)
	}
}
