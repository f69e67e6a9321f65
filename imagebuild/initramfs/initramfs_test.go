package initramfs

import (
	"bytes"
	"compress/gzip"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/imagebuild/internal/testenv"

	"github.com/u-root/u-root/pkg/cpio"
)

func sample(t *testing.T) *Archive {
	t.Helper()
	a := New()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Added out of order, parents implicit.
	must(a.File("/lib/modules/r/kernel/fs/ext4.ko", []byte("module"), 0o644))
	must(a.File("/init", []byte("#!agent"), 0o755))
	must(a.CharDev("/dev/console", 0o600, 5, 1))
	must(a.Dir("/tmp", 0o777|os.ModeSticky))
	must(a.Symlink("/lib64/ld.so", "/lib/x86_64-linux-gnu/ld.so"))
	must(a.Dir("/dev", 0o755))
	return a
}

func readBack(t *testing.T, b []byte) []cpio.Record {
	t.Helper()
	recs, err := cpio.ReadAllRecords(cpio.Newc.Reader(bytes.NewReader(b)))
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestArchiveLayout(t *testing.T) {
	b, err := sample(t).Bytes(None)
	if err != nil {
		t.Fatal(err)
	}
	recs := readBack(t, b)
	var names []string
	seen := map[string]bool{}
	for _, r := range recs {
		names = append(names, r.Name)
		if r.Name != "." && r.Name != cpio.Trailer {
			if d := filepath.Dir(r.Name); d != "." && !seen[d] {
				t.Errorf("%s written before its directory %s", r.Name, d)
			}
		}
		seen[r.Name] = true
		if r.MTime != 0 || r.UID != 0 || r.GID != 0 {
			t.Errorf("%s: not reproducible metadata %+v", r.Name, r.Info)
		}
	}
	want := ". dev dev/console init lib lib/modules lib/modules/r lib/modules/r/kernel lib/modules/r/kernel/fs lib/modules/r/kernel/fs/ext4.ko lib64 lib64/ld.so tmp"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("order\n got %s\nwant %s", got, want)
	}
	byName := map[string]cpio.Record{}
	for _, r := range recs {
		byName[r.Name] = r
	}
	if m := byName["."].Mode; m != cpio.S_IFDIR|0o755 {
		t.Errorf("root mode %o, want dir 0755", m)
	}
	if r := byName["dev/console"]; r.Mode != cpio.S_IFCHR|0o600 || r.Rmajor != 5 || r.Rminor != 1 {
		t.Errorf("console %+v", r.Info)
	}
	if m := byName["tmp"].Mode; m != cpio.S_IFDIR|0o1777 {
		t.Errorf("tmp mode %o", m)
	}
	if m := byName["init"].Mode; m != cpio.S_IFREG|0o755 {
		t.Errorf("init mode %o", m)
	}
	if r := byName["lib64/ld.so"]; r.Mode&cpio.S_IFMT != cpio.S_IFLNK {
		t.Errorf("symlink %+v", r.Info)
	}
	inos := map[uint64]string{}
	for _, r := range recs {
		if other, dup := inos[r.Ino]; dup {
			t.Errorf("%s and %s share inode %d (the kernel would hard-link them)", r.Name, other, r.Ino)
		}
		inos[r.Ino] = r.Name
	}
}

func TestReproducible(t *testing.T) {
	for _, c := range []Compression{None, Gzip} {
		a, err := sample(t).Bytes(c)
		if err != nil {
			t.Fatal(err)
		}
		b, err := sample(t).Bytes(c)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two archives of the same entries differ", c)
		}
		if c == Gzip {
			zr, err := gzip.NewReader(bytes.NewReader(a))
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := io.ReadAll(zr)
			plain, _ := sample(t).Bytes(None)
			if !bytes.Equal(raw, plain) {
				t.Error("gzip archive does not hold the plain archive")
			}
		}
	}
}

func TestErrors(t *testing.T) {
	a := New()
	if err := a.File("relative", nil, 0o644); err == nil {
		t.Error("relative path accepted")
	}
	if err := a.Dir("/", 0o755); err == nil {
		t.Error("root accepted")
	}
	a.File("/x", nil, 0o644)
	if err := a.File("/x", nil, 0o644); err == nil {
		t.Error("duplicate accepted")
	}
	if err := a.Dir("/d", 0o755); err != nil {
		t.Error(err)
	}
	if err := a.Dir("/d", 0o700); err != nil {
		t.Errorf("re-adding a directory: %v", err)
	}
	if err := a.HostFile("/y", "/nonexistent"); err == nil {
		t.Error("missing host file accepted")
	}
	if err := a.HostFile("/y", "/"); err == nil {
		t.Error("directory as host file accepted")
	}
	if err := a.Write(io.Discard, "zstd"); err == nil {
		t.Error("unknown compression accepted")
	}
}

// TestAddELF adds mke2fs with its libraries and checks the set against ldd and that the
// program really runs from the archive's tree through its own loader.
func TestAddELF(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "tune2fs")
	prog := "/usr/sbin/mke2fs"
	a := New()
	added, err := a.AddELF("/sbin/mke2fs", prog)
	if err != nil {
		t.Fatal(err)
	}
	if len(added) < 3 {
		t.Fatalf("only %d dependencies: %v", len(added), added)
	}
	for _, p := range []string{"/sbin/mke2fs", "/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libext2fs.so.2"} {
		if !a.Has(p) {
			t.Errorf("%s missing", p)
		}
	}
	// Adding a second program shares the libraries.
	if _, err := a.AddELF("/sbin/tune2fs", "/usr/sbin/tune2fs"); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ldd", prog).Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[1] == "=>" && !a.Has(f[2]) {
				// ldd prints the path the host's loader found (maybe via ld.so.cache);
				// the archive must have a file of that name in one of the default dirs.
				if !a.Has(filepath.Join("/lib/x86_64-linux-gnu", f[0])) && !a.Has(filepath.Join("/usr/lib/x86_64-linux-gnu", f[0])) {
					t.Errorf("ldd lists %s, not in the archive", f[0])
				}
			}
		}
	}
	// Unpack and run it with the archive's loader and libraries only.
	b, err := a.Bytes(None)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	for _, r := range readBack(t, b) {
		if r.Name == cpio.Trailer || r.Name == "." {
			continue
		}
		p := filepath.Join(root, r.Name)
		switch r.Mode & cpio.S_IFMT {
		case cpio.S_IFDIR:
			os.MkdirAll(p, 0o755)
		case cpio.S_IFLNK:
			target, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			os.Symlink(filepath.Join(root, string(target)), p)
		case cpio.S_IFREG:
			data, _ := io.ReadAll(io.NewSectionReader(r.ReaderAt, 0, int64(r.FileSize)))
			os.WriteFile(p, data, os.FileMode(r.Mode&0o777))
		}
	}
	libs := filepath.Join(root, "lib/x86_64-linux-gnu")
	cmd := exec.Command(filepath.Join(root, "lib64/ld-linux-x86-64.so.2"), "--inhibit-cache", "--library-path", libs, filepath.Join(root, "sbin/mke2fs"), "-V")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mke2fs") {
		t.Errorf("running the archived mke2fs: %v: %s", err, out)
	}
}
