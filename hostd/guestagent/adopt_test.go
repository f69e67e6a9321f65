package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/hostd/agent"
	"deskhost/internal/guestservice"
)

// fakeSystem writes a tree with the given files (name → content; "->x" is a symlink to x).
func fakeSystem(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, c := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if target, ok := strings.CutPrefix(c, "->"); ok {
			if err := os.Symlink(target, p); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.WriteFile(p, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestAdoptRoot(t *testing.T) {
	dir := fakeSystem(t, map[string]string{
		"usr/lib/systemd/systemd":        "systemd",
		"lib":                            "->usr/lib",
		"boot/vmlinuz-6.1.0-9-amd64":     "old kernel",
		"boot/initrd.img-6.1.0-9-amd64":  "old initrd",
		"boot/vmlinuz-6.1.0-28-amd64":    "kernel",
		"boot/initrd.img-6.1.0-28-amd64": "initrd!",
		"boot/vmlinuz-6.2.0-1-amd64":     "newest, no initrd",
		"etc/os-release":                 "ID=debian\n",
	})
	ad, err := adoptRoot(dir, []byte("agent binary"))
	if err != nil {
		t.Fatal(err)
	}
	if ad.KernelVersion != "6.1.0-28-amd64" || ad.Kernel != agent.RootMount+"/boot/vmlinuz-6.1.0-28-amd64" ||
		ad.Initrd != agent.RootMount+"/boot/initrd.img-6.1.0-28-amd64" || ad.KernelBytes != 6 || ad.InitrdBytes != 7 {
		t.Errorf("adoption %+v", ad)
	}
	b, err := os.ReadFile(filepath.Join(dir, guestservice.AgentPath))
	if err != nil || string(b) != "agent binary" {
		t.Errorf("agent binary: %q %v", b, err)
	}
	for _, u := range guestservice.Units {
		if _, err := os.Stat(filepath.Join(dir, "etc/systemd/system/multi-user.target.wants", u)); err != nil {
			// The link is absolute inside the image: check it is there, not what it resolves to here.
			if _, err := os.Lstat(filepath.Join(dir, "etc/systemd/system/multi-user.target.wants", u)); err != nil {
				t.Errorf("%s not enabled: %v", u, err)
			}
		}
	}
	if len(ad.Installed) == 0 {
		t.Error("adoption lists no installed files")
	}
}

func TestAdoptRootSymlinkedKernel(t *testing.T) {
	dir := fakeSystem(t, map[string]string{
		"lib/systemd/systemd":      "systemd",
		"boot/vmlinuz-6.8.0-1-kvm": "kernel",
		"boot/initrd-6.8.0-1-kvm":  "initrd",
		"vmlinuz":                  "->boot/vmlinuz-6.8.0-1-kvm",
		"initrd.img":               "->boot/initrd-6.8.0-1-kvm", // Debian's links are relative
	})
	ad, err := adoptRoot(dir, []byte("agent"))
	if err != nil {
		t.Fatal(err)
	}
	if ad.KernelVersion != "6.8.0-1-kvm" || ad.Kernel != agent.RootMount+"/vmlinuz" || ad.Initrd != agent.RootMount+"/initrd.img" {
		t.Errorf("adoption %+v", ad)
	}
}

func TestAdoptRootRefused(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no systemd", map[string]string{"sbin/init": "busybox", "boot/vmlinuz-6.1.0-28-amd64": "k", "boot/initrd.img-6.1.0-28-amd64": "i"}, agent.AdoptNoSystemd},
		{"no kernel", map[string]string{"lib/systemd/systemd": "s"}, agent.AdoptNoKernel},
		{"no initrd", map[string]string{"lib/systemd/systemd": "s", "boot/vmlinuz-6.1.0-28-amd64": "k"}, "no initrd.img-6.1.0-28-amd64"},
	} {
		dir := fakeSystem(t, tc.files)
		_, err := adoptRoot(dir, []byte("agent"))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		if _, serr := os.Lstat(filepath.Join(dir, guestservice.AgentPath)); serr == nil {
			t.Errorf("%s: refused, yet the agent was installed", tc.name)
		}
	}
}

func TestVersionLess(t *testing.T) {
	for _, p := range [][2]string{{"6.1.0-9-amd64", "6.1.0-28-amd64"}, {"5.10.0-30-amd64", "6.1.0-1-amd64"}, {"6.1.0", "6.1.0-1"}} {
		if !versionLess(p[0], p[1]) || versionLess(p[1], p[0]) {
			t.Errorf("%s < %s", p[0], p[1])
		}
	}
}

func TestExtUUID(t *testing.T) {
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("no mkfs.ext4")
	}
	p := filepath.Join(t.TempDir(), "fs")
	const uuid = "8c0f5d2e-3a71-4b9c-9e14-6d2b7f0a9c35"
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", "-U", uuid, p, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	if got, err := extUUID(p); err != nil || got != uuid {
		t.Errorf("extUUID = %q, %v", got, err)
	}
	if _, err := extUUID("/dev/null"); err == nil {
		t.Error("extUUID of an empty file succeeded")
	}
}

func TestReadChunk(t *testing.T) {
	base := t.TempDir()
	data := bytes.Repeat([]byte{0, 0xff, 'x', 0x80}, 1000)
	if err := os.MkdirAll(filepath.Join(base, agent.RootMount, "boot"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(base, agent.RootMount, "boot/vmlinuz"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	g := &guest{log: newLogger(io.Discard), fsPrefix: base, rootMounted: true}
	var got []byte
	for off := int64(0); ; {
		line, _ := agent.Encode(agent.Request{ID: 1, Op: agent.OpReadChunk, Path: agent.RootMount + "/boot/vmlinuz", Offset: off, Length: 1500})
		resp, _ := g.handle(line[:len(line)-1])
		// Through the wire form: binary bytes survive it.
		wire, _ := agent.Encode(resp)
		var back agent.Response
		if err := json.Unmarshal(wire, &back); err != nil || !back.OK || back.FileBytes != int64(len(data)) {
			t.Fatalf("read-chunk at %d: %+v %v", off, back, err)
		}
		if len(back.Chunk) == 0 {
			break
		}
		got = append(got, back.Chunk...)
		off += int64(len(back.Chunk))
	}
	if !bytes.Equal(got, data) {
		t.Errorf("read %d bytes, not the file's %d", len(got), len(data))
	}
}
