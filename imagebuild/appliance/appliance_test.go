package appliance_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/u-root/u-root/pkg/cpio"

	"deskhost/imagebuild/appliance"
	"deskhost/imagebuild/kernel"
	"deskhost/imagebuild/profile"
	"deskhost/init/sntp"
	"deskhost/internal/testenv"
)

func missing(t testing.TB, what string) { t.Helper(); testenv.Missing(t, what) }

var (
	ntpAddr string // the test's SNTP server, which guests reach as 10.0.2.2:port
	tmpRoot string
	// testSecret is an access key's secret, kept in secretFile on the build machine and
	// named by the baked config (secretFile), and in the build's environment: no artifact
	// may contain it (TestNoSecretInArtifacts).
	testSecret string
	secretFile string
	buildOnce  sync.Once
	built      struct {
		dir        string
		m          *appliance.Manifest
		err        error
		first      time.Duration // the first build of this run
		second     time.Duration // the same build again (warm)
		secondSums map[string]string
		sameSource bool // the two builds saw the same commit and programs
		hostConfig []byte
	}
)

func TestMain(m *testing.M) {
	// An SNTP server on the loopback: qemu's user network maps 10.0.2.2 to it.
	if c, err := net.ListenPacket("udp", "127.0.0.1:0"); err == nil {
		ntpAddr = c.LocalAddr().String()
		go sntp.Serve(c)
	}
	tmpRoot, _ = os.MkdirTemp("", "deskhost-appliance-test-")
	rnd := make([]byte, 12)
	rand.Read(rnd)
	testSecret = "deskhost-test-secret-" + hex.EncodeToString(rnd)
	secretFile = filepath.Join(tmpRoot, "admin.secret")
	os.WriteFile(secretFile, []byte(testSecret+"\n"), 0o600)
	os.Setenv("AWS_SECRET_ACCESS_KEY", testSecret) // the build must not pick it up either
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

func cacheDir() string {
	if d := os.Getenv("DESKHOST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(testenv.RepoRoot(), "build", "cache")
}

// guestNTP is the test SNTP server as guests reach it.
func guestNTP() string {
	_, port, _ := net.SplitHostPort(ntpAddr)
	return "10.0.2.2:" + port
}

// testHostConfig is configs/host-qemu.yaml with the test's NTP server, and the HTTPS API
// with an access key whose secret is a file (secretFile: on the build machine; in the
// guest there is none, and hostd comes up without the key).
func testHostConfig(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "configs", "host-qemu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "servers: []", "servers: ["+guestNTP()+"]", 1)
	if s == string(b) {
		t.Fatal("configs/host-qemu.yaml has no `servers: []` for the test to fill in")
	}
	api := "  api:\n    socket: /run/deskhost/hostd.sock\n"
	if !strings.Contains(s, api) {
		t.Fatalf("configs/host-qemu.yaml has no %q for the test to extend", api)
	}
	s = strings.Replace(s, api, api+"    listen: \":8443\"\n    accessKeys:\n      - {id: AKIADESKHOSTTEST0001, secretFile: "+secretFile+", name: test}\n", 1)
	return []byte(s)
}

// image builds the appliance from configs/appliance.yaml (with the test's host config
// baked in) once per test package, twice in fact: the second build must be
// byte-identical, and gives the warm build time.
func image(t testing.TB) (string, *appliance.Manifest) {
	t.Helper()
	testenv.Root(t)
	needTool(t, "apt-get", "dpkg-deb", "dpkg-query", "busybox")
	needFile(t, "/usr/lib/systemd/boot/efi/systemd-bootx64.efi", "/usr/sbin/libvirtd", "/usr/bin/qemu-system-x86_64")
	buildOnce.Do(func() {
		built.hostConfig = testHostConfig(t)
		cfg := filepath.Join(tmpRoot, "host.yaml")
		if built.err = os.WriteFile(cfg, built.hostConfig, 0o600); built.err != nil {
			return
		}
		p, err := profile.Load(filepath.Join(testenv.RepoRoot(), "configs", "appliance.yaml"))
		if err != nil {
			built.err = err
			return
		}
		p.HostConfig = cfg
		built.dir = filepath.Join(tmpRoot, "image")
		log := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "build: "+f+"\n", a...) }
		start := time.Now()
		built.m, built.err = appliance.Build(context.Background(), appliance.Options{Profile: p, Out: built.dir, CacheDir: cacheDir(), SourceDir: testenv.RepoRoot(), Log: log})
		built.first = time.Since(start)
		if built.err != nil {
			return
		}
		again := filepath.Join(tmpRoot, "image-again")
		start = time.Now()
		m2, err := appliance.Build(context.Background(), appliance.Options{Profile: p, Out: again, CacheDir: cacheDir(), SourceDir: testenv.RepoRoot()})
		built.second = time.Since(start)
		if err != nil {
			built.err = fmt.Errorf("second build: %w", err)
			return
		}
		built.secondSums = map[string]string{}
		for _, a := range m2.Artifacts {
			built.secondSums[a.Path] = a.SHA256
		}
		// On a shared work tree someone may change the source between the two builds.
		built.sameSource = m2.Commit == built.m.Commit && len(m2.Programs) == len(built.m.Programs)
		for i := range m2.Programs {
			if built.sameSource && m2.Programs[i].SHA256 != built.m.Programs[i].SHA256 {
				built.sameSource = false
			}
		}
		os.RemoveAll(again)
	})
	if errors.Is(built.err, kernel.ErrDownload) {
		missing(t, built.err.Error())
	}
	if built.err != nil {
		t.Fatalf("building the appliance: %v", built.err)
	}
	return built.dir, built.m
}

func fileSum(t testing.TB, p string) string {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// TestBuild checks the outputs against the manifest and each other, and that a second
// build is byte-identical.
func TestBuild(t *testing.T) {
	dir, m := image(t)
	t.Logf("build: first %.1fs, second (warm) %.1fs; initramfs %.1f MiB %s, %.1f MiB uncompressed; %d modules; %d Debian packages, %d files",
		built.first.Seconds(), built.second.Seconds(), float64(m.Initramfs.CompressedBytes)/(1<<20), m.Initramfs.Compression,
		float64(m.Initramfs.UncompressedBytes)/(1<<20), len(m.Modules), len(m.Debian.Packages), m.Debian.Files)
	if !built.sameSource {
		t.Logf("the source changed between the two builds (another commit or edited programs): reproducibility not compared this run")
	}
	want := map[string]bool{"manifest.json": false, "pxe/vmlinuz": true, "pxe/initrd.img": true, "pxe/cmdline": true, "pxe/boot.ipxe": true, "disk.img": true}
	got := map[string]bool{}
	for _, a := range m.Artifacts {
		got[a.Path] = true
		if s := fileSum(t, filepath.Join(dir, a.Path)); s != a.SHA256 {
			t.Errorf("%s: sha256 %s, manifest says %s", a.Path, s, a.SHA256)
		}
		if built.sameSource && built.secondSums[a.Path] != a.SHA256 {
			t.Errorf("%s differs between two builds of the same tree (%s vs %s): not reproducible", a.Path, a.SHA256, built.secondSums[a.Path])
		}
	}
	for p, inManifest := range want {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("output %s: %v", p, err)
		}
		if inManifest && !got[p] {
			t.Errorf("manifest lists no %s", p)
		}
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "pxe", "cmdline"))
	for _, w := range []string{"init_on_free=1", "console=tty0", "console=ttyS0,115200"} {
		if !strings.Contains(string(cmdline), w) {
			t.Errorf("cmdline %q lacks %s", cmdline, w)
		}
	}
	script, _ := os.ReadFile(filepath.Join(dir, "pxe", "boot.ipxe"))
	if !strings.HasPrefix(string(script), "#!ipxe\n") || !strings.Contains(string(script), "kernel vmlinuz initrd=initrd.img BOOTIF=${netX/mac} "+strings.TrimSpace(string(cmdline))) ||
		!strings.Contains(string(script), "\ninitrd initrd.img\n") {
		t.Errorf("boot.ipxe:\n%s", script)
	}
	if m.Kernel.Package == "" || m.Kernel.DebSHA256 == "" || m.Go == "" || m.Profile.SHA256 == "" {
		t.Errorf("manifest misses versions: %+v %+v", m.Kernel, m.Profile)
	}
	pk := map[string]string{}
	for _, p := range m.Debian.Packages {
		pk[p.Name] = p.Version
	}
	for _, p := range []string{"libvirt-daemon", "qemu-system-x86", "qemu-utils", "libc6", "busybox-static", "e2fsprogs"} {
		if pk[p] == "" {
			t.Errorf("manifest: Debian package %s not recorded (have %v)", p, pk)
		}
	}
}

// unpackInitramfs extracts the zstd cpio into a directory.
func unpackInitramfs(t testing.TB, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	raw := filepath.Join(dir, ".raw.cpio")
	out, err := os.Create(raw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, z); err != nil {
		t.Fatal(err)
	}
	out.Close()
	in, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	rr, err := cpio.Newc.NewFileReader(in)
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	err = cpio.ForEachRecord(rr, func(r cpio.Record) error {
		if r.Name == "." || r.Name == "dev/console" {
			return nil
		}
		return cpio.CreateFileInRoot(r, root, false)
	})
	if err != nil {
		t.Fatalf("unpacking the initramfs: %v", err)
	}
}

// TestInitramfsPrograms runs the image's C programs in a chroot of the unpacked
// initramfs: every library they load must be in the image where its loader looks.
func TestInitramfsPrograms(t *testing.T) {
	dir, _ := image(t)
	tmp := t.TempDir()
	unpackInitramfs(t, filepath.Join(dir, "pxe", "initrd.img"), tmp)
	root := filepath.Join(tmp, "root")
	for _, c := range [][]string{
		{"/usr/sbin/libvirtd", "--version"},
		{"/usr/sbin/virtlogd", "--version"},
		{"/usr/bin/virsh", "--version"},
		{"/usr/bin/qemu-system-x86_64", "--version"},
		{"/usr/bin/qemu-img", "--version"},
		{"/usr/sbin/mke2fs", "-V"},
		{"/bin/sh", "-c", "echo busybox ok"},
		{"/usr/bin/hostd", "help"},
		{"/usr/bin/netcfg", "help"},
	} {
		out, err := exec.Command("chroot", append([]string{root}, c...)...).CombinedOutput()
		if err != nil {
			t.Errorf("%s in the image: %v: %s", strings.Join(c, " "), err, out)
		}
	}
	// qemu loads its device modules from the image (virtio-vga is a module).
	out, err := exec.Command("chroot", root, "/usr/bin/qemu-system-x86_64", "-machine", "none", "-device", "virtio-vga,help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "virtio") {
		t.Errorf("qemu's virtio-vga module in the image: %v: %s", err, out)
	}
	for _, p := range []string{"/init", "/sbin/modprobe", "/etc/deskhost/host.yaml", "/etc/deskhost/release.json",
		"/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so", "/usr/share/seabios/bios-256k.bin",
		"/usr/lib/ipxe/qemu/efi-virtio.rom", "/usr/share/libvirt/cpu_map/index.xml"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("image lacks %s", p)
		}
	}
	entries, _ := filepath.Glob(filepath.Join(root, "lib/modules/*/modules.dep"))
	if len(entries) != 1 {
		t.Errorf("module index: %v", entries)
	}
}

// The repository's host config for virtual hosts is valid for hostd, init and netcfg.
func TestRepositoryHostConfig(t *testing.T) {
	if err := appliance.CheckHostConfig(filepath.Join(testenv.RepoRoot(), "configs", "host-qemu.yaml")); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	b, _ := os.ReadFile(filepath.Join(testenv.RepoRoot(), "configs", "host-qemu.yaml"))
	os.WriteFile(bad, []byte(strings.Replace(string(b), "candidates: [", "candidatez: [", 1)), 0o600)
	if err := appliance.CheckHostConfig(bad); err == nil || !strings.Contains(err.Error(), "candidatez") {
		t.Errorf("a bad init.network: %v", err)
	}
}
