package profile

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

func write(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const good = `name: deskhost
version: "0.4"
kernel:
  package: linux-image-amd64
  cmdline: quiet
  modules: [virtio_net, ext4]
  load: [ext4]
hostConfig: host.yaml
programs:
  - {package: deskhost/hostd, path: /usr/bin/hostd}
debian:
  programs: [/bin/sh]
  data: [/etc/hostname]
outputs:
  - format: pxe
  - {format: raw-efi, size: 1GiB, espSize: 100MiB}
`

func TestParseGood(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "host.yaml", "x")
	p, err := Load(write(t, dir, "p.yaml", good))
	if err != nil {
		t.Fatal(err)
	}
	if p.HostConfig != filepath.Join(dir, "host.yaml") {
		t.Errorf("hostConfig not made relative to the profile: %s", p.HostConfig)
	}
	o, ok := p.Output(FormatRawEFI)
	if !ok || o.Size != 1<<30 || o.ESPSize != 100<<20 {
		t.Errorf("raw-efi output: %+v", o)
	}
	if p.Initramfs.Compression != "zstd" {
		t.Errorf("default compression %q", p.Initramfs.Compression)
	}
	if c := p.Cmdline(); c != FixedCmdline+" quiet" {
		t.Errorf("cmdline %q", c)
	}
}

// Every mistake is an error naming the key (and the file, when one is missing).
func TestParseBad(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"name: deskhost", "name: deskhost\nnmae: x", "field nmae not found"},
		{"name: deskhost", "name: Desk Host", `name "Desk Host"`},
		{"  package: linux-image-amd64", "  packge: linux-image-amd64", "field packge not found"},
		{"hostConfig: host.yaml", "hostConfig: nothere.yaml", "hostConfig: " + "/"},
		{"hostConfig: host.yaml", "hostConfig: nothere.yaml", "nothere.yaml: no such file"},
		{"  package: linux-image-amd64", "  deb: /no/such/kernel.deb", "kernel.deb: /no/such/kernel.deb: no such file"},
		{"  cmdline: quiet", "  cmdline: quiet init_on_free=0", "init_on_free=1 is fixed"},
		{"  cmdline: quiet", "  cmdline: console=ttyS1", "consoles are fixed"},
		{"  modules: [virtio_net, ext4]", "  modules: []", "kernel.modules: required"},
		{"  modules: [virtio_net, ext4]", "  modules: [virtio_net, 'ext4; rm']", `kernel.modules[1]`},
		{"  - format: pxe", "  - format: iso", `outputs[0].format "iso"`},
		{"  - format: pxe", "  - {format: pxe, size: 1GiB}", "outputs[0].size: not a key of format pxe"},
		{"size: 1GiB", "size: 1 gigabyte", `size "1 gigabyte"`},
		{"espSize: 100MiB", "espSize: 10MiB", "espSize 10MiB: at least"},
		{"size: 1GiB", "size: 120MiB", "outputs[1].size 120MiB"},
		{"  - format: pxe\n", "  - format: pxe\n  - format: pxe\n", "format pxe given twice"},
		{"  programs: [/bin/sh]", "  programs: [/usr/bin/no-such-program]", "debian.programs[0]: /usr/bin/no-such-program: no such file"},
		{"  data: [/etc/hostname]", "  data: [/etc/no-such-*]", "debian.data[0]: /etc/no-such-*: no such file"},
		{"path: /usr/bin/hostd}", "path: /init}", "image path /init is already init"},
		{"path: /usr/bin/hostd}", "path: usr/bin/hostd}", "image path"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if bad == good {
			t.Fatalf("case %q does not apply", tc.from)
		}
		dir := t.TempDir()
		write(t, dir, "host.yaml", "x")
		_, err := Load(write(t, dir, "p.yaml", bad))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s -> %s: %v; want an error containing %q", tc.from, tc.to, err, tc.want)
		}
	}
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing profile: %v", err)
	}
	if _, err := Parse([]byte(""), dir); err == nil {
		t.Error("empty profile accepted")
	}
	if _, err := Parse([]byte(good+"---\nname: x\n"), dir); err == nil {
		t.Error("two documents accepted")
	}
}

func TestRepositoryProfile(t *testing.T) {
	p, err := Load(filepath.Join("..", "..", "configs", "appliance.yaml"))
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			testenv.Missing(t, "a file configs/appliance.yaml names (scripts/install-deps.sh installs them): "+err.Error())
		}
		t.Fatal(err)
	}
	if !p.Has(FormatPXE) || !p.Has(FormatRawEFI) || !strings.Contains(p.Cmdline(), "init_on_free=1") {
		t.Errorf("configs/appliance.yaml: %+v", p.Outputs)
	}
}
