package confine

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

// The real path — qemu under libvirt as libvirt-qemu, its files, its display — is tested
// in hostd/controller (TestLifecycleAgainstLibvirt) and the limits in the appliance VM test;
// these are the checks that refuse bad setups, with clear errors.

func TestLookup(t *testing.T) {
	if _, err := Lookup("root", "", "", false); err == nil || !strings.Contains(err.Error(), "root") {
		t.Errorf("qemu as root: %v", err)
	}
	if _, err := Lookup("no-such-user-x", "", "", false); err == nil || !strings.Contains(err.Error(), "no-such-user-x") {
		t.Errorf("unknown user: %v", err)
	}
	p, err := Lookup("nobody", "", "", true)
	if err != nil {
		t.Fatal(err)
	}
	if p.UID != 65534 || p.DisplayGID != -1 || !p.Limits || p.Label() != "+65534:+65534" {
		t.Errorf("nobody: %+v label %q", p, p.Label())
	}
	if _, err := Lookup("nobody", "", "no-such-group-x", false); err == nil || !strings.Contains(err.Error(), "display group") {
		t.Errorf("unknown display group: %v", err)
	}
	if Root.Unprivileged() || Root.Label() != "" {
		t.Errorf("root policy: %+v", Root)
	}
}

// TestPrepare hands a WorkSpace's files to qemu's user and refuses shared image files that
// user could write or not read, and paths it cannot reach.
func TestPrepare(t *testing.T) {
	testenv.Root(t) // chown
	p := Policy{UID: 65534, GID: 65534, DisplayGID: 65533}
	base, err := os.MkdirTemp("", "confine") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	run := filepath.Join(base, "run")
	vol := filepath.Join(base, "vol.qcow2")
	img := filepath.Join(base, "vmlinux")
	for _, f := range []string{vol, img} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(run, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(run, []string{vol}, []string{img}); err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(run)
	if fi.Mode().Perm() != 0o750 {
		t.Errorf("runtime dir mode %o", fi.Mode().Perm())
	}
	fi, _ = os.Stat(vol)
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("volume mode %o", fi.Mode().Perm())
	}
	if err := p.Reclaim([]string{vol, filepath.Join(base, "gone")}); err != nil {
		t.Fatal(err)
	}

	if err := os.Chmod(img, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(run, []string{vol}, []string{img}); err == nil || !strings.Contains(err.Error(), "may write the shared image") {
		t.Errorf("world-writable image: %v", err)
	}
	if err := os.Chmod(img, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(run, []string{vol}, []string{img}); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Errorf("unreadable image: %v", err)
	}
	if err := os.Chmod(base, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := p.Prepare(run, []string{vol}, nil); err == nil || !strings.Contains(err.Error(), "cannot reach") {
		t.Errorf("unreachable data dir: %v", err)
	}
}

func TestCheckLimits(t *testing.T) {
	defer func(r string) { cgroupRoot = r }(cgroupRoot)
	cgroupRoot = t.TempDir() // a tmpfs or disk directory, not cgroup2
	if err := CheckLimits(); err == nil || !strings.Contains(err.Error(), "cgroup v2") {
		t.Errorf("no cgroup2 mount: %v", err)
	}
}
