package kernel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"deskhost/imagebuild/internal/testenv"
	"deskhost/imagebuild/kernel"
	"deskhost/imagebuild/kmod"
)

// xzCompress runs the xz tool with the given filter options.
func xzCompress(t *testing.T, data []byte, args ...string) []byte {
	t.Helper()
	testenv.NeedTools(t, "xz")
	cmd := exec.Command("xz", append([]string{"--format=xz", "-c"}, args...)...)
	cmd.Stdin = bytes.NewReader(data)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz %v: %v", args, err)
	}
	return out
}

func TestDecodeXZ(t *testing.T) {
	// Real x86 code exercises the BCJ filter (E8/E9 call/jump targets).
	exe, err := os.ReadFile("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	if len(exe) > 1<<20 {
		exe = exe[:1<<20]
	}
	random := make([]byte, 100000)
	rand.Read(random)
	inputs := map[string][]byte{"exe": exe, "random": random, "empty": nil, "tiny": []byte("abc"),
		"e8-tail": append(bytes.Repeat([]byte{0xe8, 0, 0, 0, 0}, 100), 0xe8, 1, 2)}
	for name, data := range inputs {
		for _, args := range [][]string{
			{"--check=crc32", "--x86", "--lzma2=preset=6,dict=1MiB"}, // what the kernel uses
			{"--check=crc64", "--lzma2"},
			{"--check=none", "--x86", "--lzma2"},
			{"--check=crc32", "--x86=start=4096", "--lzma2"},
		} {
			comp := xzCompress(t, data, args...)
			got, err := kernel.DecodeXZ(append(comp, 1, 2, 3, 4)) // trailing bytes as in a bzImage
			if err != nil {
				t.Errorf("%s %v: %v", name, args, err)
				continue
			}
			if !bytes.Equal(got, data) {
				t.Errorf("%s %v: decoded %d bytes differ from the %d input bytes", name, args, len(got), len(data))
			}
		}
	}
	// Corruption is detected.
	comp := xzCompress(t, exe[:200000:200000], "--check=crc32", "--x86", "--lzma2")
	bad := append([]byte(nil), comp...)
	bad[len(bad)/2] ^= 0x40
	if _, err := kernel.DecodeXZ(bad); err == nil {
		t.Error("corrupt stream decoded without error")
	}
	for _, in := range [][]byte{nil, []byte("not xz at all"), comp[:20]} {
		if _, err := kernel.DecodeXZ(in); err == nil {
			t.Errorf("%q decoded", in)
		}
	}
}

func TestExtractVmlinuxErrors(t *testing.T) {
	if _, err := kernel.ExtractVmlinux(make([]byte, 4096)); err == nil || !strings.Contains(err.Error(), "HdrS") {
		t.Errorf("zeros: %v", err)
	}
	bz := make([]byte, 8192)
	copy(bz[0x202:], "HdrS")
	binary.LittleEndian.PutUint16(bz[0x206:], 0x020f)
	bz[0x1f1] = 1
	binary.LittleEndian.PutUint32(bz[0x248:], 0)
	binary.LittleEndian.PutUint32(bz[0x24c:], 100)
	copy(bz[1024:], "\x1f\x8b gzip")
	if _, err := kernel.ExtractVmlinux(bz); err == nil || !strings.Contains(err.Error(), "not xz") {
		t.Errorf("gzip payload: %v", err)
	}
	binary.LittleEndian.PutUint32(bz[0x24c:], 1<<20)
	if _, err := kernel.ExtractVmlinux(bz); err == nil || !strings.Contains(err.Error(), "outside") {
		t.Errorf("payload past the end: %v", err)
	}
}

var (
	fetchOnce sync.Once
	fetched   *kernel.Unpacked
	fetchErr  error
)

func debianKernel(t *testing.T) *kernel.Unpacked {
	t.Helper()
	testenv.NeedTools(t, "apt-get", "apt-cache", "dpkg-deb")
	fetchOnce.Do(func() {
		fetched, fetchErr = kernel.Fetch(context.Background(), kernel.FetchOptions{CacheDir: testenv.CacheDir(t), Log: t.Logf})
	})
	if errors.Is(fetchErr, kernel.ErrDownload) {
		testenv.Need(t, false, fetchErr.Error())
	}
	if fetchErr != nil {
		t.Fatal(fetchErr)
	}
	return fetched
}

// TestDebianKernel: the real linux-image-amd64: vmlinux extraction matches the xz tool's
// decoding, has the PVH note, and the modules hostd's guests need resolve.
func TestDebianKernel(t *testing.T) {
	k := debianKernel(t)
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		t.Fatal(err)
	}
	v, err := kernel.ExtractVmlinux(bz)
	if err != nil {
		t.Fatal(err)
	}
	ok, err := kernel.HasPVHNote(v)
	if err != nil || !ok {
		t.Errorf("PVH note: %v %v", ok, err)
	}
	// Cross-check with xz: decode the payload with the xz tool.
	setup := int(bz[0x1f1])
	off := (setup+1)*512 + int(binary.LittleEndian.Uint32(bz[0x248:]))
	n := int(binary.LittleEndian.Uint32(bz[0x24c:]))
	testenv.NeedTools(t, "xz")
	cmd := exec.Command("xz", "-dc", "--single-stream")
	cmd.Stdin = bytes.NewReader(bz[off : off+n])
	want, err := cmd.Output()
	if err != nil {
		t.Fatalf("xz -d: %v", err)
	}
	if !bytes.Equal(v, want) {
		t.Errorf("vmlinux (%d bytes) differs from xz's decoding (%d bytes)", len(v), len(want))
	}
	cfg, err := k.ReadConfig()
	if err != nil || cfg["CONFIG_PVH"] != "y" || cfg["CONFIG_KERNEL_XZ"] != "y" {
		t.Errorf("config: PVH=%q KERNEL_XZ=%q %v", cfg["CONFIG_PVH"], cfg["CONFIG_KERNEL_XZ"], err)
	}

	tree, err := kmod.Open(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	res, err := tree.Resolve([]string{"virtio_pci", "virtio_blk", "virtio_net", "virtio_console", "ext4", "pvpanic_mmio"})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range res.Load {
		pos[m.Name] = i
		if _, err := os.Stat(filepath.Join(k.ModulesDir, m.Path)); err != nil {
			t.Error(err)
		}
	}
	for _, want := range []string{"virtio_ring", "virtio", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "jbd2", "mbcache", "crc16", "crc32c_generic", "pvpanic", "failover", "net_failover"} {
		if _, ok := pos[want]; !ok {
			t.Errorf("dependency %s not resolved; load order %v", want, res.Load)
		}
	}
	for _, m := range res.Load {
		in, err := tree.Info(m.Name)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(in.Vermagic, k.Release+" ") {
			t.Errorf("%s vermagic %q is not for %s", m.Name, in.Vermagic, k.Release)
		}
		for _, d := range in.Depends {
			if tree.Builtin(d) {
				continue
			}
			if p, ok := pos[d]; !ok || p > pos[m.Name] {
				t.Errorf("%s: dependency %s not loaded before it", m.Name, d)
			}
		}
	}
	if tree.Builtin("virtio_blk") {
		t.Error("virtio_blk reported built in; Debian builds it as a module")
	}

	// A second Fetch hits the cache.
	k2, err := kernel.Fetch(context.Background(), kernel.FetchOptions{CacheDir: testenv.CacheDir(t)})
	if err != nil || k2.Dir != k.Dir {
		t.Errorf("second fetch: %v %v", k2, err)
	}
	// A local .deb works offline.
	k3, err := kernel.Fetch(context.Background(), kernel.FetchOptions{CacheDir: testenv.CacheDir(t), Deb: k.Deb})
	if err != nil || k3.Release != k.Release {
		t.Errorf("local deb: %v %v", k3, err)
	}
}

func TestFetchErrors(t *testing.T) {
	testenv.NeedTools(t, "apt-cache", "dpkg-deb")
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := kernel.Fetch(ctx, kernel.FetchOptions{CacheDir: dir, Package: "linux-image-no-such-thing"}); err == nil || !strings.Contains(err.Error(), "linux-image-no-such-thing") {
		t.Errorf("unknown package: %v", err)
	}
	if _, err := kernel.Fetch(ctx, kernel.FetchOptions{CacheDir: dir, Deb: filepath.Join(dir, "missing.deb")}); err == nil {
		t.Error("missing local .deb accepted")
	}
	notDeb := filepath.Join(dir, "x.deb")
	os.WriteFile(notDeb, []byte("not a deb"), 0o644)
	if _, err := kernel.Fetch(ctx, kernel.FetchOptions{CacheDir: dir, Deb: notDeb}); err == nil {
		t.Error("a file that is not a .deb accepted")
	}
	if _, err := kernel.Fetch(ctx, kernel.FetchOptions{}); err == nil {
		t.Error("no cache directory accepted")
	}
}
