package desktop_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/imagebuild/desktop"
	"deskhost/internal/desktopimage"
)

const testWorkspace = "ws-test000001"

func cmdline(m *desktop.Manifest) string {
	return m.Cmdline + " deskhost.workspace=" + testWorkspace + " deskhost.user=alice"
}

func TestManifest(t *testing.T) {
	dir, m := image(t)
	t.Logf("build (cold or warm cache) took %v", buildTime)
	loaded, err := desktop.Load(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Kernel != desktop.VmlinuxFile || loaded.BootProtocol != desktop.BootPVH {
		t.Errorf("kernel %q boot %q, want vmlinux/pvh", loaded.Kernel, loaded.BootProtocol)
	}
	if m.AgentChannel != agent.ChannelName || m.OS != "linux" || m.Name != "desktop" {
		t.Errorf("manifest %+v", m)
	}
	if !strings.Contains(m.Cmdline, "console=ttyS0") || !strings.Contains(m.Cmdline, "panic=-1") {
		t.Errorf("cmdline %q", m.Cmdline)
	}
	for _, f := range []string{m.Kernel, m.Initrd, m.Root} {
		if len(m.SHA256[f]) != 64 {
			t.Errorf("no sha256 for %s", f)
		}
	}
	// The root volume is a qcow2 holding an ext4 filesystem with os-release.
	out := run(t, "qemu-img", "info", "--output=json", filepath.Join(dir, m.Root))
	var info struct {
		Format      string `json:"format"`
		VirtualSize int64  `json:"virtual-size"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.VirtualSize != m.RootVirtualSize {
		t.Errorf("root volume: %+v, manifest says %d", info, m.RootVirtualSize)
	}
	raw := filepath.Join(t.TempDir(), "root.raw")
	run(t, "qemu-img", "convert", "-O", "raw", filepath.Join(dir, m.Root), raw)
	osr := run(t, "debugfs", "-R", "cat /etc/os-release", raw)
	if !strings.Contains(osr, `NAME="deskhost desktop"`) {
		t.Errorf("root /etc/os-release:\n%s", osr)
	}
	run(t, "e2fsck", "-fn", raw)
	// Modules the agent needs are all there.
	mods := strings.Join(m.Modules, " ")
	for _, want := range []string{"virtio_pci", "virtio_blk", "virtio_console", "ext4", "jbd2", "crc32c_generic", "pvpanic_mmio"} {
		if !strings.Contains(" "+mods+" ", " "+want+" ") {
			t.Errorf("module %s missing from %v", want, m.Modules)
		}
	}
}

// TestManifestContract: hostd reads image.json with internal/desktopimage (unknown
// fields rejected); what imagebuild writes must load there unchanged.
func TestManifestContract(t *testing.T) {
	dir, m := image(t)
	img, err := desktopimage.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(m)
	b, _ := json.Marshal(img.Manifest)
	if !bytes.Equal(a, b) {
		t.Errorf("manifests differ:\nimagebuild %s\nhostd      %s", a, b)
	}
	if img.Kernel != filepath.Join(dir, m.Kernel) || img.Initrd != filepath.Join(dir, m.Initrd) || img.Root != filepath.Join(dir, m.Root) {
		t.Errorf("paths %+v", img)
	}
}

// TestReproducible builds the image a second time (warm cache) and compares every file.
func TestReproducible(t *testing.T) {
	dir, m := image(t)
	second := filepath.Join(imagesDir, "b")
	start := time.Now()
	m2, err := desktop.Build(context.Background(), desktop.Options{Out: second, CacheDir: cacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("warm build: %v", time.Since(start))
	for _, f := range []string{m.Kernel, m.Initrd, m.Root, desktop.ManifestFile} {
		a, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(second, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds", f)
		}
	}
	if m.SHA256[m.Initrd] != m2.SHA256[m2.Initrd] {
		t.Errorf("initrd sha256 %s vs %s", m.SHA256[m.Initrd], m2.SHA256[m2.Initrd])
	}
	// A rebuild into an existing directory replaces it.
	m3, err := desktop.Build(context.Background(), desktop.Options{Out: second, CacheDir: cacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	if m3.SHA256[m3.Root] != m.SHA256[m.Root] {
		t.Error("rebuild over an existing output changed the root volume")
	}
	ents, _ := os.ReadDir(imagesDir)
	for _, e := range ents {
		if strings.Contains(e.Name(), "building") {
			t.Errorf("leftover temporary directory %s", e.Name())
		}
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	if _, err := desktop.Build(ctx, desktop.Options{CacheDir: t.TempDir()}); err == nil {
		t.Error("no output directory accepted")
	}
	if _, err := desktop.Build(ctx, desktop.Options{Out: filepath.Join(t.TempDir(), "x"), CacheDir: t.TempDir(), Boot: "floppy"}); err == nil || !strings.Contains(err.Error(), "floppy") {
		t.Errorf("bad boot protocol: %v", err)
	}
	// An output below a file cannot be created; nothing is left behind.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	if _, err := desktop.Build(ctx, desktop.Options{Out: filepath.Join(f, "out"), CacheDir: t.TempDir()}); err == nil {
		t.Error("output below a regular file accepted")
	}
	// An existing directory that is not an image is never replaced.
	notImage := t.TempDir()
	os.WriteFile(filepath.Join(notImage, "precious"), []byte("x"), 0o644)
	if _, err := desktop.Build(ctx, desktop.Options{Out: notImage, CacheDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not replacing") {
		t.Errorf("non-image output directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(notImage, "precious")); err != nil {
		t.Error("the existing directory was touched")
	}
	if _, err := desktop.Build(ctx, desktop.Options{Out: f, CacheDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("output is a file: %v", err)
	}
	buildTools(t)
	out := filepath.Join(t.TempDir(), "out")
	_, err := desktop.Build(ctx, desktop.Options{Out: out, CacheDir: cacheDir(t), KernelPackage: "linux-image-does-not-exist"})
	if err == nil || !strings.Contains(err.Error(), "linux-image-does-not-exist") {
		t.Errorf("missing kernel package: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("failed build left %s", out)
	}
	_, err = desktop.Build(ctx, desktop.Options{Out: out, CacheDir: cacheDir(t), KernelDeb: "/nonexistent/linux-image.deb"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/linux-image.deb") {
		t.Errorf("missing local kernel package: %v", err)
	}
}

// TestBootAndAgent boots the image as hostd would, waits for the ready line and drives
// every agent op through hostd/agent, across a reboot.
func TestBootAndAgent(t *testing.T) {
	dir, m := image(t)
	v := bootVM(t, vmOpts{
		kernel: filepath.Join(dir, m.Kernel), initrd: filepath.Join(dir, m.Initrd), root: filepath.Join(dir, m.Root),
		cmdline: cmdline(m),
	})
	d, err := v.waitLine(agent.ReadyLine, 90*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("boot to %q: %v", agent.ReadyLine, d)

	// The display shows the status screen (a screenshot of a WorkSpace is not blank):
	// the title bar is white on blue, and there is text.
	time.Sleep(500 * time.Millisecond)
	shot := filepath.Join(v.dir, "screen.ppm")
	if err := v.screendump(shot); err != nil {
		t.Fatal(err)
	}
	w, h, pix, err := readPPM(shot)
	if err != nil {
		t.Fatal(err)
	}
	blue, light := 0, 0
	for i := 0; i+2 < len(pix); i += 3 {
		r, g, b := pix[i], pix[i+1], pix[i+2]
		if b > 0x80 && r < 0x40 && g < 0x40 {
			blue++
		}
		if r > 0x80 && g > 0x80 && b > 0x80 {
			light++
		}
	}
	if blue < w*8 || light < 2000 {
		t.Errorf("display (%dx%d) does not show the status screen: %d blue, %d light pixels", w, h, blue, light)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := agent.Dial(ctx, v.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	st, err := c.Status(sctx)
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status: %+v", *st)
	if st.WorkspaceID != testWorkspace || st.Hostname != testWorkspace || st.User != "alice" {
		t.Errorf("identity: %+v", st)
	}
	if !st.RootMounted || !st.HomeMounted || !st.HomeFormatted {
		t.Errorf("volumes: root %v home %v formatted %v; errors %v", st.RootMounted, st.HomeMounted, st.HomeFormatted, st.Errors)
	}
	if len(st.Errors) != 0 {
		t.Errorf("agent errors: %v", st.Errors)
	}
	if st.MemTotalKiB < 100<<10 || st.MemAvailableKiB == 0 || st.MemAvailableKiB > st.MemTotalKiB {
		t.Errorf("memory: total %d available %d KiB", st.MemTotalKiB, st.MemAvailableKiB)
	}
	if st.UptimeMs == 0 || st.AgentVersion != agent.Version || st.KernelRelease != m.KernelVersion {
		t.Errorf("uptime %d version %q kernel %q", st.UptimeMs, st.AgentVersion, st.KernelRelease)
	}

	// Files on both volumes.
	files := map[string]string{
		"/sysroot/var/deskhost-test/root.txt": "on the root volume\n",
		"/home/alice/Documents/home.txt":      "on the user volume: ünïcödé\n",
	}
	for p, data := range files {
		if err := c.WriteFile(ctx, p, []byte(data)); err != nil {
			t.Fatalf("write %s: %v", p, err)
		}
		got, err := c.ReadFile(ctx, p)
		if err != nil || string(got) != data {
			t.Fatalf("read %s: %q, %v", p, got, err)
		}
	}
	// The agent itself refuses paths outside the volumes (bypassing client checks).
	for _, p := range []string{"/etc/passwd", "/sysroot/../etc/passwd", "/home", "relative", "/sysroot/a/../../x"} {
		for _, op := range []string{agent.OpReadFile, agent.OpWriteFile} {
			_, err := c.Call(ctx, agent.Request{Op: op, Path: p, Data: "x"})
			var ae *agent.Error
			if !errors.As(err, &ae) {
				t.Errorf("%s %q: want an agent error, got %v", op, p, err)
			}
		}
	}
	// Reading a missing file fails.
	if _, err := c.ReadFile(ctx, "/sysroot/nonexistent"); err == nil {
		t.Error("reading a missing file succeeded")
	}
	// Unknown ops are named in the error.
	_, err = c.Call(ctx, agent.Request{Op: "make-coffee"})
	if err == nil || !strings.Contains(err.Error(), "make-coffee") {
		t.Errorf("unknown op: %v", err)
	}

	// fill-memory.
	n, err := c.FillMemory(ctx, "DESKHOST-MARKER-0123456789", 50)
	if err != nil {
		t.Fatal(err)
	}
	wantMin := st.MemAvailableKiB * 1024 * 40 / 100
	if n < wantMin || n > st.MemAvailableKiB*1024*55/100 {
		t.Errorf("fill-memory filled %d bytes, MemAvailable was %d KiB", n, st.MemAvailableKiB)
	}
	st2, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.MemAvailableKiB-st2.MemAvailableKiB < n/1024*8/10 {
		t.Errorf("MemAvailable %d -> %d KiB after filling %d bytes", st.MemAvailableKiB, st2.MemAvailableKiB, n)
	}
	if _, err := c.FillMemory(ctx, "short", 10); err == nil {
		t.Error("a short marker was accepted")
	}

	// Reconnects: the agent survives the host going away, and a late answer to a
	// request whose connection closed is discarded by the next client.
	c.Close()
	raw, err := net.Dial("unix", v.sock)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte(`{"id":999999,"op":"status"}` + "\n"))
	raw.Close()
	for i := 0; i < 3; i++ {
		c2, err := agent.Dial(ctx, v.sock)
		if err != nil {
			t.Fatal(err)
		}
		sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
		if _, err := c2.Status(sctx); err != nil {
			t.Fatalf("status after reconnect %d: %v", i, err)
		}
		scancel()
		c2.Close()
	}

	// Reboot: the data is still on both volumes, the user volume is not formatted again.
	c, err = agent.Dial(ctx, v.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Shutdown(ctx, true); err != nil {
		t.Fatal(err)
	}
	if d, err = v.waitLine(agent.ReadyLine, 90*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("reboot to ready: %v", d)
	c.Close()
	c, err = agent.Dial(ctx, v.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sctx, scancel = context.WithTimeout(ctx, 30*time.Second)
	st, err = c.Status(sctx)
	scancel()
	if err != nil {
		t.Fatal(err)
	}
	if !st.RootMounted || !st.HomeMounted || st.HomeFormatted {
		t.Errorf("after reboot: root %v home %v formatted %v; errors %v", st.RootMounted, st.HomeMounted, st.HomeFormatted, st.Errors)
	}
	for p, data := range files {
		got, err := c.ReadFile(ctx, p)
		if err != nil || string(got) != data {
			t.Errorf("after reboot, %s: %q, %v", p, got, err)
		}
	}

	// Power off: qemu exits by itself, with status 0.
	if err := c.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	err, exited := v.waitExit(60 * time.Second)
	if !exited {
		t.Fatal("qemu still running 60 s after shutdown")
	}
	if err != nil {
		t.Errorf("qemu exit after poweroff: %v", err)
	}
}

// TestCrash: the crash op panics the guest kernel, and the ISA pvpanic device (libvirt
// <panic model='isa'/>) reports it: qemu's panic action exit-failure ends qemu with
// status 1 (a plain panic=-1 reboot under -no-reboot would exit 0).
func TestCrash(t *testing.T) {
	dir, m := image(t)
	v := bootVM(t, vmOpts{
		kernel: filepath.Join(dir, m.Kernel), initrd: filepath.Join(dir, m.Initrd), root: filepath.Join(dir, m.Root),
		cmdline: cmdline(m),
		extra:   []string{"-device", "pvpanic", "-no-reboot", "-action", "panic=exit-failure"},
	})
	// hostd connects as soon as the domain runs, long before the guest opens its port:
	// Status keeps asking until the agent answers.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := agent.Dial(ctx, v.sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("status answered %v after connecting before boot", time.Since(start))
	if st.WorkspaceID != testWorkspace {
		t.Errorf("status %+v", st)
	}
	if err := c.Crash(ctx); err != nil {
		t.Fatal(err)
	}
	err, exited := v.waitExit(60 * time.Second)
	if !exited {
		t.Fatal("qemu still running 60 s after crash")
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("qemu exit after crash: %v (want status 1 from pvpanic)", err)
	}
	if !strings.Contains(v.Serial(), "Kernel panic") {
		t.Error("no kernel panic on the serial console")
	}
}
