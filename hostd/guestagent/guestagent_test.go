package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
)

func TestParseCmdline(t *testing.T) {
	c := parseCmdline("console=ttyS0 quiet deskhost.workspace=ws-a1b2c3d4e5 deskhost.user=alice panic=-1\n")
	if c.workspace != "ws-a1b2c3d4e5" || c.user != "alice" || len(c.errs) != 0 {
		t.Errorf("%+v", c)
	}
	// hostd query-escapes user names, which may hold spaces.
	c = parseCmdline("deskhost.workspace=ws-a1b2c3d4e5 deskhost.user=jo+van+dyke%23")
	if c.user != "jo van dyke#" {
		t.Errorf("escaped user name: %q", c.user)
	}
	c = parseCmdline("console=ttyS0")
	if c.workspace != "" || len(c.errs) != 1 || !strings.Contains(c.errs[0], "deskhost.workspace") {
		t.Errorf("missing id: %+v", c)
	}
	// An imported image's test boot runs under the image's id.
	if c = parseCmdline("deskhost.workspace=wsi-a1b2c3d4e5"); c.workspace != "wsi-a1b2c3d4e5" || len(c.errs) != 0 {
		t.Errorf("image id: %+v", c)
	}
	for _, bad := range []string{"ws-", "wsi-", "ws-ABC", "xx-abc", "ws-a.b", "ws-" + strings.Repeat("a", 61), "ws-a;reboot"} {
		c = parseCmdline("deskhost.workspace=" + bad)
		if c.workspace != "" || len(c.errs) == 0 {
			t.Errorf("%q accepted: %+v", bad, c)
		}
	}
}

func TestParseLoadOrder(t *testing.T) {
	in := "# comment\n/lib/modules/r/kernel/a.ko\n\n?/lib/modules/r/kernel/b.ko\n"
	es, err := parseLoadOrder(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 2 || es[0].path != "/lib/modules/r/kernel/a.ko" || es[0].optional || !es[1].optional || es[1].path != "/lib/modules/r/kernel/b.ko" {
		t.Errorf("%+v", es)
	}
	for _, bad := range []string{"relative.ko\n", "/lib/x.txt\n"} {
		if _, err := parseLoadOrder(strings.NewReader(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// The root filesystem is the whole disk, or a partitioned disk's first ext partition.
func TestRootFilesystem(t *testing.T) {
	sys, dev := t.TempDir(), t.TempDir()
	ext := make([]byte, 2048)
	ext[extMagicOffset], ext[extMagicOffset+1] = 0x53, 0xEF
	other := make([]byte, 2048)
	write := func(name string, b []byte) { os.WriteFile(filepath.Join(dev, name), b, 0o644) }
	// vda: whole-disk ext4.
	write("vda", ext)
	// vdb: partitioned; vdb1 vfat-ish, vdb2 ext, vdb10 ext.
	write("vdb", other)
	for _, p := range []string{"vdb1", "vdb2", "vdb10"} {
		os.MkdirAll(filepath.Join(sys, "vdb", p), 0o755)
	}
	os.MkdirAll(filepath.Join(sys, "vdb", "queue"), 0o755)
	write("vdb1", other)
	write("vdb2", ext)
	write("vdb10", ext)
	// vdc: no filesystem anywhere.
	write("vdc", other)
	for disk, want := range map[string]string{"vda": "vda", "vdb": "vdb2", "vdc": "vdc"} {
		if got := rootFilesystem(sys, dev, disk); got != filepath.Join(dev, want) {
			t.Errorf("%s: %s, want %s", disk, got, want)
		}
	}
}

func TestPickVolumes(t *testing.T) {
	for _, tc := range []struct {
		disks      []disk
		root, home string
	}{
		{[]disk{{name: "vda"}, {name: "vdb"}}, "vda", "vdb"},
		{[]disk{{name: "vda"}}, "vda", ""},
		{nil, "", ""},
		{[]disk{{name: "vda", serial: "home"}, {name: "vdb", serial: "root"}}, "vdb", "vda"},
		{[]disk{{name: "vda", serial: "deskhost-user"}, {name: "vdb"}}, "vdb", "vda"},
		{[]disk{{name: "vda", serial: "xyz"}, {name: "vdb", serial: "root"}}, "vdb", "vda"},
	} {
		r, h := pickVolumes(tc.disks)
		if r != tc.root || h != tc.home {
			t.Errorf("%+v: root %q home %q, want %q %q", tc.disks, r, h, tc.root, tc.home)
		}
	}
}

func TestListDisksOrder(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"vdaa", "vdb", "vda", "sda", "loop0"} {
		os.MkdirAll(filepath.Join(dir, n), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "vdb", "serial"), []byte("home\n"), 0o644)
	ds := listDisks(dir)
	var names []string
	for _, d := range ds {
		names = append(names, d.name+":"+d.serial)
	}
	if got := strings.Join(names, " "); got != "vda: vdb:home vdaa:" {
		t.Errorf("disks %s", got)
	}
}

func TestExtSuperblock(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, make([]byte, 8192), 0o644)
	ok, err := hasExtSuperblock(blank)
	if err != nil || ok {
		t.Errorf("blank: %v %v", ok, err)
	}
	b := make([]byte, 8192)
	b[extMagicOffset], b[extMagicOffset+1] = 0x53, 0xef
	ext := filepath.Join(dir, "ext")
	os.WriteFile(ext, b, 0o644)
	ok, err = hasExtSuperblock(ext)
	if err != nil || !ok {
		t.Errorf("ext: %v %v", ok, err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, make([]byte, 100), 0o644)
	if _, err := hasExtSuperblock(short); err == nil {
		t.Error("short device: no error")
	}
}

func TestFillPattern(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 4096, 100003} {
		b := make([]byte, n)
		p := []byte("MARKER-0")
		fillPattern(b, p)
		want := bytes.Repeat(p, n/len(p)+1)[:n]
		if !bytes.Equal(b, want) {
			t.Errorf("n=%d: pattern wrong", n)
		}
	}
}

func TestParseMeminfo(t *testing.T) {
	total, avail := parseMeminfo("MemTotal:        210728 kB\nMemFree:         180000 kB\nMemAvailable:    175516 kB\nBuffers: 1 kB\n")
	if total != 210728 || avail != 175516 {
		t.Errorf("%d %d", total, avail)
	}
}

func TestRandomUUID(t *testing.T) {
	a, err := randomUUID()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := randomUUID()
	if len(a) != 36 || a == b || a[14] != '4' || !strings.ContainsRune("89ab", rune(a[19])) {
		t.Errorf("%s %s", a, b)
	}
}

// handle without volumes: validation and the not-mounted guard, no side effects.
func TestHandleWithoutVolumes(t *testing.T) {
	g := &guest{log: newLogger(io.Discard), workspaceID: "ws-x", hostname: "ws-x"}
	for _, tc := range []struct {
		line, want string
	}{
		{`{"id":1,"op":"nope"}`, `unknown op "nope"`},
		{`{"id":2,"op":"write-file","path":"/home/a","data":"x"}`, "user volume is not mounted"},
		{`{"id":3,"op":"read-file","path":"/sysroot/a"}`, "root volume is not mounted"},
		{`{"id":4,"op":"read-file","path":"/etc/passwd"}`, "not below"},
		{`{"id":5,"op":"fill-memory","marker":"x","percent":5}`, "marker"},
		{`{garbage`, "bad request"},
		{`{"id":6,"op":"silence","seconds":0}`, "seconds"},
	} {
		resp, after := g.handle([]byte(tc.line))
		if resp.OK || !strings.Contains(resp.Error, tc.want) || after != nil {
			t.Errorf("%s: %+v, want error containing %q", tc.line, resp, tc.want)
		}
	}
	resp, after := g.handle([]byte(`{"id":7,"op":"status"}`))
	if !resp.OK || resp.ID != 7 || resp.Status == nil || resp.Status.WorkspaceID != "ws-x" || resp.Status.AgentVersion != agent.Version || after != nil {
		t.Errorf("status: %+v", resp)
	}
	// shutdown and crash act only after the reply is written.
	for _, op := range []string{"shutdown", "crash"} {
		resp, after = g.handle([]byte(`{"id":8,"op":"` + op + `"}`))
		if !resp.OK || after == nil {
			t.Errorf("%s: %+v, after %v", op, resp, after != nil)
		}
	}
	// silence answers, then serve closes the port for the time asked.
	resp, _ = g.handle([]byte(`{"id":9,"op":"silence","seconds":42}`))
	if !resp.OK || g.silentFor != 42*time.Second {
		t.Errorf("silence: %+v, silent for %s", resp, g.silentFor)
	}
}

// Files go through os.Root: a symlink on the volume cannot lead outside it.
func TestVolumeFiles(t *testing.T) {
	base := t.TempDir()
	outside := t.TempDir()
	os.MkdirAll(filepath.Join(base, "sysroot"), 0o755)
	os.MkdirAll(filepath.Join(base, "home"), 0o755)
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	os.Symlink(outside, filepath.Join(base, "home", "escape"))
	os.Symlink("../../..", filepath.Join(base, "sysroot", "up"))
	g := &guest{log: newLogger(io.Discard), fsPrefix: base, rootMounted: true, homeMounted: true}

	if err := g.writeFile("/home/alice/docs/a.txt", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(base, "home/alice/docs/a.txt")); err != nil || string(b) != "hello" {
		t.Errorf("written file: %q %v", b, err)
	}
	if b, err := g.readFile("/home/alice/docs/a.txt"); err != nil || string(b) != "hello" {
		t.Errorf("read back: %q %v", b, err)
	}
	if err := g.writeFile("/sysroot/etc/x", []byte("")); err != nil {
		t.Errorf("empty file: %v", err)
	}
	for _, p := range []string{"/home/escape/secret", "/sysroot/up/etc/passwd"} {
		if _, err := g.readFile(p); err == nil {
			t.Errorf("read %s through a symlink out of the volume", p)
		}
		if err := g.writeFile(p, []byte("x")); err == nil {
			t.Errorf("wrote %s through a symlink out of the volume", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "secret" {
		t.Error("file outside the volume changed")
	}
	big := filepath.Join(base, "home", "big")
	os.WriteFile(big, make([]byte, agent.MaxFileBytes+1), 0o644)
	if _, err := g.readFile("/home/big"); err == nil {
		t.Error("oversized file read")
	}
}

func TestVGARender(t *testing.T) {
	v := &vgaText{mem: make([]byte, 4096)}
	for i := range v.mem {
		v.mem[i] = 0xee // leftovers of the firmware's screen
	}
	lines := statusLines("ws-abc", "", "ws-abc", "ready", "/dev/vda", "/dev/vdb", true, false, true, []string{"bad thing"}, 3*time.Second)
	v.render(lines)
	row := func(r int) string {
		var b []byte
		for c := 0; c < vgaCols; c++ {
			b = append(b, v.mem[(r*vgaCols+c)*2])
		}
		return strings.TrimRight(string(b), " ")
	}
	if row(0) != "  deskhost desktop" || v.mem[1] != 0x1f || v.mem[2*79+1] != 0x1f {
		t.Errorf("title %q attr %#x", row(0), v.mem[1])
	}
	if row(2) != "  WorkSpace    ws-abc" || row(3) != "  User         (none)" {
		t.Errorf("rows %q %q", row(2), row(3))
	}
	if !strings.Contains(row(6), "NOT mounted (formatted this boot)") {
		t.Errorf("home row %q", row(6))
	}
	last := len(lines) - 1
	if row(last) != "   - bad thing" || v.mem[(last*vgaCols)*2+1] != 0x0c {
		t.Errorf("problem row %q", row(last))
	}
	if row(24) != "" || v.mem[(24*vgaCols)*2+1] != 0x07 {
		t.Errorf("last row not cleared: %q", row(24))
	}
}
