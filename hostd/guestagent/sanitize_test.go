package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"deskhost/hostd/agent"
	"deskhost/internal/testenv"

	"golang.org/x/sys/unix"
)

// sanitizeTree lays out a root volume with what the guide's sanitising removes and what
// it must keep, below base/sysroot.
func sanitizeTree(t *testing.T, base string) (root string) {
	root = filepath.Join(base, "sysroot")
	files := map[string]string{
		"etc/ssh/ssh_host_ed25519_key":       "PRIVATE",
		"etc/ssh/ssh_host_ed25519_key.pub":   "PUBLIC",
		"etc/ssh/ssh_host_rsa_key":           "PRIVATE-RSA",
		"etc/ssh/sshd_config":                "keep",
		"etc/machine-id":                     "0123456789abcdef0123456789abcdef\n",
		"etc/sudoers.d/admins":               "%admins ALL=(ALL) ALL",
		"etc/security/access.conf":           "+:admins:ALL",
		"var/log/syslog":                     "log line",
		"var/log/syslog.1":                   "old",
		"var/log/apt/history.log.2.gz":       "old",
		"var/log/journal/abc/system.journal": "journal",
		"var/cache/apt/pkgcache.bin":         "cache",
		"tmp/x/y":                            "tmp",
		"home/alice/.bashrc":                 "user",
		"root/.bash_history":                 "secret command",
		"usr/bin/app":                        "keep",
		"marker":                             "keep",
	}
	for p, c := range files {
		f := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(c), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// A symlink out of the volume is removed, never followed.
	outside := filepath.Join(base, "outside")
	os.WriteFile(outside, []byte("outside"), 0o644)
	os.Symlink(outside, filepath.Join(root, "etc/ssh/ssh_host_ecdsa_key"))
	return root
}

func TestSanitize(t *testing.T) {
	base := t.TempDir()
	root := sanitizeTree(t, base)
	g := &guest{log: newLogger(io.Discard), fsPrefix: base, rootMounted: true}
	resp, _ := g.handle([]byte(`{"id":1,"op":"sanitize"}`))
	if !resp.OK {
		t.Fatalf("sanitize: %s", resp.Error)
	}
	if resp.RootUsedPercent <= 0 || resp.RootUsedPercent >= 100 {
		t.Errorf("root used %.1f%%", resp.RootUsedPercent)
	}
	gone := []string{"etc/ssh/ssh_host_ed25519_key", "etc/ssh/ssh_host_ed25519_key.pub", "etc/ssh/ssh_host_rsa_key",
		"etc/ssh/ssh_host_ecdsa_key", "etc/sudoers.d/admins", "etc/security/access.conf", "var/log/syslog.1",
		"var/log/apt/history.log.2.gz", "var/log/journal/abc", "var/cache/apt", "tmp/x", "home/alice", "root/.bash_history"}
	for _, p := range gone {
		if _, err := os.Lstat(filepath.Join(root, p)); err == nil {
			t.Errorf("%s is still there", p)
		}
	}
	for p, want := range map[string]string{"etc/machine-id": "", "var/log/syslog": "", "etc/ssh/sshd_config": "keep", "usr/bin/app": "keep", "marker": "keep"} {
		if b, err := os.ReadFile(filepath.Join(root, p)); err != nil || string(b) != want {
			t.Errorf("%s: %q %v, want %q", p, b, err, want)
		}
	}
	for _, d := range []string{"tmp", "var/cache", "home", "etc/sudoers.d"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() {
			t.Errorf("directory %s should stay (emptied): %v", d, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(base, "outside")); string(b) != "outside" {
		t.Error("a symlink's target outside the volume was changed")
	}
	if !slices.Contains(resp.Sanitized, "shredded root/.bash_history") || !slices.Contains(resp.Sanitized, "shredded etc/ssh/ssh_host_ed25519_key") || !slices.Contains(resp.Sanitized, "truncated etc/machine-id") {
		t.Errorf("reported changes: %q", resp.Sanitized)
	}
	// A second run finds nothing more to do, and says so.
	resp, _ = g.handle([]byte(`{"id":2,"op":"sanitize"}`))
	if !resp.OK || len(resp.Sanitized) != 0 {
		t.Errorf("second sanitize: ok %v, %q", resp.OK, resp.Sanitized)
	}
	// Without a root volume there is nothing to sanitise.
	g = &guest{log: newLogger(io.Discard), fsPrefix: base}
	if resp, _ = g.handle([]byte(`{"id":3,"op":"sanitize"}`)); resp.OK || !strings.Contains(resp.Error, "not mounted") {
		t.Errorf("unmounted root: %+v", resp)
	}
}

// A root volume 97 % full or more is refused, and nothing on it changes.
func TestSanitizeRefusesFullRoot(t *testing.T) {
	testenv.Root(t)
	base := t.TempDir()
	mnt := filepath.Join(base, "sysroot")
	os.MkdirAll(mnt, 0o755)
	if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=4m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	sanitizeTree(t, base)
	// Fill it to 98 %.
	var st unix.Statfs_t
	unix.Statfs(mnt, &st)
	fill := int64(st.Blocks)*int64(st.Bsize)*98/100 - int64(st.Blocks-st.Bfree)*int64(st.Bsize)
	if err := os.WriteFile(filepath.Join(mnt, "fill"), make([]byte, fill), 0o644); err != nil {
		t.Fatal(err)
	}
	g := &guest{log: newLogger(io.Discard), fsPrefix: base, rootMounted: true}
	resp, _ := g.handle([]byte(`{"id":1,"op":"sanitize"}`))
	if resp.OK || !strings.Contains(resp.Error, "less than 97% full") || resp.RootUsedPercent < 97 {
		b, _ := json.Marshal(resp)
		t.Fatalf("sanitize of a full root: %s", b)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/ssh/ssh_host_ed25519_key")); err != nil || string(b) != "PRIVATE" {
		t.Errorf("the refused sanitize changed the volume: %q %v", b, err)
	}
	// Freed below 97 %, it runs.
	os.Truncate(filepath.Join(mnt, "fill"), fill/2)
	if resp, _ = g.handle([]byte(`{"id":2,"op":"sanitize"}`)); !resp.OK || resp.RootUsedPercent >= agent.MaxImageRootPercent {
		t.Errorf("sanitize below 97%%: %+v", resp)
	}
}
