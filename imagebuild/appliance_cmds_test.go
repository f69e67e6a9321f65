package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/argon2id"
	"deskhost/internal/hostconfig"
)

// minimalProfile is a valid profile naming only files every Debian machine has.
func minimalProfile(t *testing.T, extra string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "p.yaml")
	body := "name: t\nkernel:\n  modules: [ext4]\n" + extra + "debian:\n  programs: [/bin/sh]\noutputs: [{format: pxe}]\n"
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplianceCLI(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	notDir := filepath.Join(tmp, "file")
	os.WriteFile(notDir, []byte("x"), 0o644)
	badKey := filepath.Join(tmp, "bad.yaml")
	os.WriteFile(badKey, []byte("name: t\nkernal: {}\n"), 0o644)
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"help"}, 0, "build"},
		{[]string{"build", "-h"}, 0, "raw-efi"},
		{[]string{"build", "--bogus"}, 2, "flag provided but not defined"},
		{[]string{"build", "extra"}, 2, "unexpected arguments: extra"},
		{[]string{"build", "-q", "--profile", filepath.Join(tmp, "none.yaml")}, 1, "none.yaml: no such file"},
		{[]string{"build", "-q", "--profile", badKey}, 1, "field kernal not found"},
		{[]string{"serve"}, 2, "want 1 argument"},
		{[]string{"serve", "--http", "", "--tftp", "", notDir}, 1, "not a directory"},
		{[]string{"serve", "--http", "", "--tftp", "", "--proxydhcp-qemu", filepath.Join(tmp, "q1"), tmp}, 1, "needs --boot-url"},
		{[]string{"serve", "--http", "", "--tftp", "", "--proxydhcp-qemu", filepath.Join(tmp, "q2"), "--boot-url", "http://pxe.example/boot.ipxe", tmp}, 1, "with an IPv4 address"},
		{[]string{"flash", "--image", "x"}, 2, "--image and --device are required"},
		{[]string{"flash", "--image", filepath.Join(tmp, "none.img"), "--device", "/dev/null"}, 1, "none.img"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(ctx, tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
}

// A failed build leaves nothing that looks finished: no output directory, no
// temporary one.
func TestApplianceBuildFailuresLeaveNoOutput(t *testing.T) {
	ctx := context.Background()
	tmp := t.TempDir()
	fakeDeb := filepath.Join(tmp, "linux-image-fake.deb")
	os.WriteFile(fakeDeb, []byte("not a deb"), 0o644)
	file := filepath.Join(tmp, "file")
	os.WriteFile(file, nil, 0o644)
	cases := []struct {
		name    string
		profile string
		out     string
		want    string
	}{
		{"unwritable output", minimalProfile(t, ""), filepath.Join(file, "sub", "out"), "output directory"},
		{"broken kernel package", minimalProfile(t, "  deb: "+fakeDeb+"\n"), filepath.Join(tmp, "out1"), "kernel package"},
	}
	if _, err := exec.LookPath("apt-cache"); err == nil {
		cases = append(cases, struct{ name, profile, out, want string }{"unknown kernel package",
			minimalProfile(t, "  package: linux-image-deskhost-no-such-kernel\n"), filepath.Join(tmp, "out2"), "linux-image-deskhost-no-such-kernel"})
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		code := run(ctx, []string{"build", "-q", "--profile", tc.profile, "--out", tc.out, "--cache", filepath.Join(tmp, "cache")}, &stdout, &stderr)
		if code != 1 || !strings.Contains(stderr.String(), tc.want) {
			t.Errorf("%s: exit %d, %q; want 1 and %q", tc.name, code, stderr.String(), tc.want)
		}
		if _, err := os.Stat(tc.out); err == nil {
			t.Errorf("%s: %s exists after a failed build", tc.name, tc.out)
		}
		left, _ := filepath.Glob(filepath.Join(filepath.Dir(tc.out), ".*building*"))
		if len(left) > 0 {
			t.Errorf("%s: temporary output left behind: %v", tc.name, left)
		}
	}
}

// serve --proxydhcp-qemu prints the qemu options that attach its ProxyDHCP, with the
// default boot URL: this server as a qemu guest sees it.
func TestServeProxyDHCPQEMU(t *testing.T) {
	tmp := t.TempDir()
	os.WriteFile(filepath.Join(tmp, "boot.ipxe"), []byte("#!ipxe\n"), 0o644)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	var stdout, stderr bytes.Buffer
	q := filepath.Join(tmp, "q")
	code := run(ctx, []string{"serve", "--http", "127.0.0.1:0", "--tftp", "", "--proxydhcp-qemu", q, tmp}, &stdout, &stderr)
	out := stdout.String()
	if code != 0 || !regexp.MustCompile(`boot file http://10\.0\.2\.2:\d+/boot\.ipxe`).MatchString(out) ||
		!strings.Contains(out, "-object filter-dump,id=mgmt-pxe-dump,netdev=mgmt,") || !strings.Contains(out, "path="+filepath.Join(q, "inject.sock")) {
		t.Errorf("exit %d\nstdout %s\nstderr %s", code, out, stderr.String())
	}
}

// console-password prints a hash that verifies the password read from standard input,
// in the host config's shape; a short password is refused.
func TestConsolePassword(t *testing.T) {
	defer func(r io.Reader) { stdin = r }(stdin)
	stdin = strings.NewReader("correct horse\n")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"console-password"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var c hostconfig.Config
	if err := yaml.Unmarshal(stdout.Bytes(), &c); err != nil {
		t.Fatal(err)
	}
	if ok, err := argon2id.Verify(c.Init.Console.PasswordHash, "correct horse"); !ok || err != nil {
		t.Errorf("%q does not verify: %v", stdout.String(), err)
	}
	if _, err := hostconfig.Parse([]byte("hostd: {store: /s, dataDir: /d, libvirt: {socket: /l}, network: {managementBridge: a, primaryBridge: b}, api: {socket: /h}}\n" + stdout.String())); err != nil {
		t.Errorf("the printed snippet does not load: %v", err)
	}
	stdin = strings.NewReader("short\n")
	stderr.Reset()
	if code := run(context.Background(), []string{"console-password"}, &stdout, &stderr); code != 1 || !strings.Contains(stderr.String(), "8 to 128") {
		t.Errorf("short: exit %d %s", code, stderr.String())
	}
}
