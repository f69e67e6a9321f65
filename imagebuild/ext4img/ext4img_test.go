package ext4img

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/imagebuild/internal/testenv"
)

func opts() Options {
	return Options{
		SizeMiB: 16, Label: "test", UUID: "11111111-2222-4333-8444-555555555555", HashSeed: "66666666-7777-4888-9999-aaaaaaaaaaaa",
		Time: time.Unix(1700000000, 0),
		Entries: []Entry{
			{Path: "/etc/os-release", Mode: 0o644, Data: []byte("NAME=\"x\"\n")},
			{Path: "/etc/deep/er/file", Mode: 0o600, Data: []byte("secret"), UID: 1000, GID: 1000},
			{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
			{Path: "/bin", Mode: fs.ModeSymlink, Target: "usr/bin"},
			{Path: "/usr/bin", Mode: fs.ModeDir | 0o755},
		},
	}
}

func debugfs(t *testing.T, img, cmd string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", cmd, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs %s: %v: %s", cmd, err, out)
	}
	return string(out)
}

func TestBuildReproducible(t *testing.T) {
	testenv.NeedTools(t, "mke2fs", "debugfs", "e2fsck", "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.raw"), filepath.Join(dir, "b.raw")
	if err := Build(ctx, a, opts()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // a different staging ctime
	if err := Build(ctx, b, opts()); err != nil {
		t.Fatal(err)
	}
	ba, _ := os.ReadFile(a)
	bb, _ := os.ReadFile(b)
	if len(ba) != 16<<20 || !bytes.Equal(ba, bb) {
		t.Fatalf("two builds differ (sizes %d, %d)", len(ba), len(bb))
	}
	qa, qb := filepath.Join(dir, "a.qcow2"), filepath.Join(dir, "b.qcow2")
	if err := ToQcow2(ctx, a, qa); err != nil {
		t.Fatal(err)
	}
	if err := ToQcow2(ctx, b, qb); err != nil {
		t.Fatal(err)
	}
	ba, _ = os.ReadFile(qa)
	bb, _ = os.ReadFile(qb)
	if !bytes.Equal(ba, bb) {
		t.Error("qcow2 conversions differ")
	}

	if got := debugfs(t, a, "cat /etc/os-release"); !strings.Contains(got, `NAME="x"`) {
		t.Errorf("os-release: %s", got)
	}
	st := debugfs(t, a, "stat /etc/deep/er/file")
	for _, want := range []string{"User:  1000", "Group:  1000", "Mode:  0600", "ctime: 0x6553f100", "mtime: 0x6553f100", "crtime: 0x6553f100"} {
		if !strings.Contains(st, want) {
			t.Errorf("stat lacks %q:\n%s", want, st)
		}
	}
	if st := debugfs(t, a, "stat /tmp"); !strings.Contains(st, "Mode:  01777") {
		t.Errorf("/tmp:\n%s", st)
	}
	if st := debugfs(t, a, "stat /"); !strings.Contains(st, "User:     0") || !strings.Contains(st, "ctime: 0x6553f100") {
		t.Errorf("/:\n%s", st)
	}
	if got := debugfs(t, a, "stat /bin"); !strings.Contains(got, `Fast link dest: "usr/bin"`) {
		t.Errorf("symlink:\n%s", got)
	}
	sb, _ := exec.Command("dumpe2fs", "-h", a).CombinedOutput()
	for _, want := range []string{"Filesystem UUID:          11111111-2222-4333-8444-555555555555", "Filesystem volume name:   test", "Directory Hash Seed:      66666666-7777-4888-9999-aaaaaaaaaaaa"} {
		if !strings.Contains(string(sb), want) {
			t.Errorf("superblock lacks %q", want)
		}
	}
}

func TestBadOptions(t *testing.T) {
	ctx := context.Background()
	out := filepath.Join(t.TempDir(), "x.raw")
	for name, mod := range map[string]func(*Options){
		"small":    func(o *Options) { o.SizeMiB = 1 },
		"uuid":     func(o *Options) { o.UUID = "nope" },
		"label":    func(o *Options) { o.Label = strings.Repeat("l", 17) },
		"no time":  func(o *Options) { o.Time = time.Time{} },
		"path":     func(o *Options) { o.Entries = []Entry{{Path: "/a b", Mode: 0o644}} },
		"dotdot":   func(o *Options) { o.Entries = []Entry{{Path: "/a/../b", Mode: 0o644}} },
		"quote":    func(o *Options) { o.Entries = []Entry{{Path: "/a\"b", Mode: 0o644}} },
		"relative": func(o *Options) { o.Entries = []Entry{{Path: "a", Mode: 0o644}} },
		"device":   func(o *Options) { o.Entries = []Entry{{Path: "/dev/null", Mode: fs.ModeDevice | 0o666}} },
	} {
		o := opts()
		mod(&o)
		if err := Build(ctx, out, o); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
