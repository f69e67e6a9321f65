package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/hostd/agent"
)

func TestMountSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "mountinfo")
	info := "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n" +
		"30 22 254:16 / /home rw,relatime shared:9 - ext4 /dev/vdb rw\n" +
		"31 22 0:25 / /tmp rw - tmpfs tmpfs rw\n" +
		"32 22 254:32 / /sysroot rw - ext4 /dev/vdc rw\n" +
		"33 22 254:48 / /sysroot rw - xfs /dev/vdd rw\n" // mounted over: the last one counts
	if err := os.WriteFile(p, []byte(info), 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, want := range map[string][2]string{"/home": {"/dev/vdb", "ext4"}, "/": {"/dev/vda", "ext4"}, "/home/": {"/dev/vdb", "ext4"},
		"/tmp": {"tmpfs", "tmpfs"}, "/sysroot": {"/dev/vdd", "xfs"}} {
		dev, fstype, err := mountSource(p, dir)
		if err != nil || dev != want[0] || fstype != want[1] {
			t.Errorf("mountSource(%q) = %q %q %v, want %v", dir, dev, fstype, err, want)
		}
	}
	if _, _, err := mountSource(p, "/srv"); err == nil || !strings.Contains(err.Error(), "nothing is mounted on /srv") {
		t.Errorf("/srv: %v", err)
	}
}

// grow-fs refuses what it cannot grow, naming why: a volume that is not mounted, a
// filesystem that is not ext4 (the test's own /tmp may be anything, so an unmounted
// prefix is used).
func TestGrowFSRefusals(t *testing.T) {
	g := &guest{log: newLogger(io.Discard), fsPrefix: t.TempDir()}
	if _, _, err := g.growFS(agent.VolumeUser, 1); err == nil || !strings.Contains(err.Error(), "not mounted") {
		t.Errorf("unmounted user volume: %v", err)
	}
	g.homeMounted = true
	if _, _, err := g.growFS(agent.VolumeUser, 1); err == nil || !strings.Contains(err.Error(), "nothing is mounted on") {
		t.Errorf("user volume not a mount point: %v", err)
	}
	if _, err := agent.DecodeRequest([]byte(`{"id":1,"op":"grow-fs","volume":"swap"}`)); err == nil || !strings.Contains(err.Error(), `"swap"`) {
		t.Errorf("grow-fs of volume swap: %v", err)
	}
	if r, err := agent.DecodeRequest([]byte(`{"id":1,"op":"grow-fs","volume":"user","minBytes":53687091200}`)); err != nil || r.MinBytes != 50<<30 {
		t.Errorf("grow-fs request: %+v %v", r, err)
	}
}
