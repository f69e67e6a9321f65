// Package desktop builds the tiny Linux "desktop" image every WorkSpace boots: Debian's
// kernel (as an uncompressed PVH vmlinux), an initramfs whose /init is the deskhost guest
// agent (hostd/guestagent) with the kernel modules it needs and mke2fs, and a small ext4
// root volume as qcow2, described by image.json. Same inputs give byte-identical files.
// Options.Profile ProfileGraphical builds instead a real desktop (Debian 12 + Xfce, the
// agent as a systemd service) in the same layout: see graphical.go.
//
// What a domain booting the image needs (hostd/virt):
//   - direct kernel boot: <kernel> = image.json kernel, <initrd> = initrd, <cmdline> =
//     cmdline + " deskhost.workspace=ws-... [deskhost.user=NAME]" (the id becomes the
//     hostname and is what the agent's status reports);
//   - RAM: at least 96 MiB (80 MiB does not boot);
//   - two virtio disks: the root volume (a qcow2 child of root.qcow2, any larger size) as
//     the first (vda), the user volume as the second (vdb); a virtio-blk <serial> of
//     "root" / "home" overrides the order. A user volume without an ext2/3/4 superblock is
//     formatted on boot;
//   - <channel type='unix'><source mode='bind' path=.../><target type='virtio'
//     name='org.deskhost.agent.0'/></channel>, spoken by deskhost/hostd/agent;
//   - a serial port (ttyS0): the agent logs there and prints "deskhost-agent: ready";
//   - a VGA-compatible video device (tested: <model type='vga'/>): with the PVH boot the
//     kernel has no VGA console, and the agent writes its status screen into the VGA
//     text buffer itself;
//   - <panic model='isa'/> so that a guest kernel panic reaches on_crash (pvpanic-mmio is
//     loaded); without it, panic=-1 turns a panic into a reboot.
package desktop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"deskhost/internal/atomicfile"
	"deskhost/internal/desktopimage"
	"deskhost/internal/digest"

	"deskhost/hostd/agent"
	"deskhost/imagebuild/ext4img"
	"deskhost/imagebuild/initramfs"
	"deskhost/imagebuild/kernel"
	"deskhost/imagebuild/kmod"

	"golang.org/x/sys/unix"
)

// File names inside the output directory.
const (
	ManifestFile = desktopimage.ManifestName
	InitrdFile   = "initrd.img"
	RootFile     = "root.qcow2"
	VmlinuxFile  = "vmlinux" // PVH boot
	VmlinuzFile  = "vmlinuz" // bzImage boot
)

// Boot protocols.
const (
	BootPVH     = "pvh"     // uncompressed ELF vmlinux, booted by qemu through its PVH note
	BootBzImage = "bzimage" // Debian's compressed bzImage as is
)

// DefaultCmdline is the base kernel command line; hostd appends
// deskhost.workspace=ws-... (and deskhost.user=NAME). The last console= is /dev/console
// (serial: the agent's log, panics); the kernel prints to both. panic=-1 reboots at
// once on a panic, so a crash ends up in libvirt's on_crash (with pvpanic) or on_reboot.
const DefaultCmdline = "console=tty0 console=ttyS0,115200 quiet panic=-1"

// Modules is what the agent loads (their dependencies are resolved from .modinfo).
var Modules = []string{
	"virtio_pci", "virtio_blk", "virtio_console", "virtio_net",
	"virtio_rng",     // seeds the guest CRNG from the host (<rng model='virtio'>): mke2fs needs random bytes
	"crc32c_generic", // ext4 and jbd2 checksums (softdep crypto-crc32c)
	"ext4",
	"pvpanic", "pvpanic_mmio", "pvpanic_pci", // <panic model='isa'/> is ACPI QEMU0001: pvpanic-mmio
}

// DefaultEpoch is the timestamp of every file when SOURCE_DATE_EPOCH is not set.
var DefaultEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Fixed identities of the root filesystem (every WorkSpace's root is a child of it).
const (
	rootUUID     = "5d3e0a1c-7b2f-4e61-9c0d-3a8f1e6b2d47"
	rootHashSeed = "b1f0c2d3-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
	rootSizeMiB  = 64
)

// Manifest is image.json: the contract with hostd, defined in internal/desktopimage.
type Manifest = desktopimage.Manifest

// Options of a build.
type Options struct {
	Out      string // output directory (replaced atomically when the build completes)
	CacheDir string // downloads and unpacked kernels

	KernelPackage string // default linux-image-amd64
	KernelVersion string // pin a version of KernelPackage
	KernelDeb     string // use this local .deb instead of apt
	// UpdateAptLists runs apt-get update before the kernel is resolved (make image sets it).
	UpdateAptLists bool

	Boot        string                // BootPVH (default) or BootBzImage
	Compression initramfs.Compression // initramfs compression, default none
	Cmdline     string                // default DefaultCmdline

	// Profile is ProfileTiny (default) or ProfileGraphical (see graphical.go); Mirror is
	// the Debian mirror the graphical profile installs from (default: mmdebstrap's).
	Profile string
	Mirror  string

	// AgentBinary is a prebuilt static guest agent; empty builds hostd/guestagent from
	// the deskhost module the current directory is in.
	AgentBinary string

	Epoch time.Time // default: SOURCE_DATE_EPOCH, else DefaultEpoch
	Log   func(format string, args ...any)
}

func (o *Options) defaults() error {
	if o.Out == "" {
		return errors.New("desktop: no output directory")
	}
	if o.CacheDir == "" {
		return errors.New("desktop: no cache directory")
	}
	if o.Profile == "" {
		o.Profile = ProfileTiny
	}
	if o.Profile != ProfileTiny && o.Profile != ProfileGraphical {
		return fmt.Errorf("desktop: profile %q: want %s or %s", o.Profile, ProfileTiny, ProfileGraphical)
	}
	if o.Profile == ProfileGraphical && (o.KernelDeb != "" || o.KernelVersion != "" || o.KernelPackage != "") {
		return fmt.Errorf("desktop: profile %s installs Debian's linux-image-amd64 with the system: no kernel package, version or .deb options", ProfileGraphical)
	}
	if o.Boot == "" {
		o.Boot = BootPVH
	}
	if o.Boot != BootPVH && o.Boot != BootBzImage {
		return fmt.Errorf("desktop: boot protocol %q: want %s or %s", o.Boot, BootPVH, BootBzImage)
	}
	if o.Compression == "" {
		o.Compression = initramfs.None
	}
	if o.Compression != initramfs.None && o.Compression != initramfs.Gzip {
		return fmt.Errorf("desktop: initramfs compression %q: want none or gzip", o.Compression)
	}
	if o.Cmdline == "" {
		o.Cmdline = DefaultCmdline
	}
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.Epoch.IsZero() {
		o.Epoch = DefaultEpoch
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil || n <= 0 {
				return fmt.Errorf("desktop: SOURCE_DATE_EPOCH=%q is not a positive number of seconds", s)
			}
			o.Epoch = time.Unix(n, 0).UTC()
		}
	}
	return nil
}

// Build builds the image into o.Out. Nothing appears at o.Out unless the build
// completes: the files are made in a temporary directory next to it, then swapped in.
func Build(ctx context.Context, o Options) (*Manifest, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	step := func(format string, args ...any) {
		o.Log("[%5.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, err
	}
	if err := checkReplaceable(out); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return nil, fmt.Errorf("desktop: output directory: %w", err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(out), "."+filepath.Base(out)+".building-")
	if err != nil {
		return nil, fmt.Errorf("desktop: output directory %s is not writable: %w", filepath.Dir(out), err)
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("desktop: cache directory: %w", err)
	}

	if o.Profile == ProfileGraphical {
		m, err := buildGraphical(ctx, o, tmp, step)
		if err != nil {
			return nil, err
		}
		if err := writeManifest(tmp, m); err != nil {
			return nil, err
		}
		if err := swapIn(tmp, out); err != nil {
			return nil, err
		}
		step("done: %s", out)
		return m, nil
	}

	// Kernel.
	step("kernel package")
	k, err := kernel.Fetch(ctx, kernel.FetchOptions{
		Package: o.KernelPackage, Version: o.KernelVersion, Deb: o.KernelDeb, UpdateLists: o.UpdateAptLists,
		CacheDir: o.CacheDir, Log: func(f string, a ...any) { step(f, a...) },
	})
	if err != nil {
		return nil, err
	}
	step("kernel %s (%s %s)", k.Release, k.Package, k.Version)
	m := &Manifest{
		Name: "desktop", OS: "linux",
		Initrd: InitrdFile, Root: RootFile, RootFormat: "qcow2", RootVirtualSize: rootSizeMiB << 20,
		Cmdline: o.Cmdline, AgentChannel: agent.ChannelName, AgentVersion: agent.Version,
		BootProtocol: o.Boot, KernelVersion: k.Release, KernelPackage: k.Package, KernelPackageVersion: k.Version,
		InitrdCompression: string(o.Compression),
	}
	if err := writeKernel(k, o.Boot, tmp, m, step); err != nil {
		return nil, err
	}

	// Initramfs.
	agentBin := o.AgentBinary
	if agentBin == "" {
		step("building the guest agent")
		agentBin = filepath.Join(tmp, ".init")
		if err := BuildAgent(ctx, agentBin); err != nil {
			return nil, err
		}
	}
	step("initramfs")
	size, mods, err := writeInitramfs(k, agentBin, filepath.Join(tmp, InitrdFile), o.Compression)
	if err != nil {
		return nil, err
	}
	_ = os.Remove(filepath.Join(tmp, ".init"))
	m.Modules = mods
	step("initramfs: %d modules, %.1f MiB (%s)", len(mods), float64(size)/(1<<20), o.Compression)

	// Root volume.
	step("root volume (ext4, %d MiB)", rootSizeMiB)
	raw := filepath.Join(tmp, ".root.raw")
	if err := ext4img.Build(ctx, raw, ext4img.Options{
		SizeMiB: rootSizeMiB, Label: "root", UUID: rootUUID, HashSeed: rootHashSeed,
		Time: o.Epoch, Entries: rootEntries(k.Release),
	}); err != nil {
		return nil, err
	}
	if err := ext4img.ToQcow2(ctx, raw, filepath.Join(tmp, RootFile)); err != nil {
		return nil, err
	}
	_ = os.Remove(raw)

	// Manifest.
	m.SHA256 = map[string]string{}
	for _, f := range []string{m.Kernel, m.Initrd, m.Root} {
		sum, err := digest.File(filepath.Join(tmp, f))
		if err != nil {
			return nil, err
		}
		m.SHA256[f] = sum
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	for _, f := range []string{m.Kernel, m.Initrd, m.Root, ManifestFile} {
		if err := syncFile(filepath.Join(tmp, f)); err != nil {
			return nil, err
		}
	}
	if err := swapIn(tmp, out); err != nil {
		return nil, err
	}
	step("done: %s", out)
	return m, nil
}

func writeKernel(k *kernel.Unpacked, boot, dir string, m *Manifest, step func(string, ...any)) error {
	bz, err := os.ReadFile(k.Vmlinuz)
	if err != nil {
		return err
	}
	if boot == BootBzImage {
		m.Kernel = VmlinuzFile
		return os.WriteFile(filepath.Join(dir, VmlinuzFile), bz, 0o644)
	}
	cfg, err := k.ReadConfig()
	if err != nil {
		return fmt.Errorf("kernel config: %w", err)
	}
	if cfg["CONFIG_PVH"] != "y" {
		return fmt.Errorf("kernel %s lacks CONFIG_PVH=y: build with boot protocol %s", k.Release, BootBzImage)
	}
	// The unpacked tree is keyed by the package's SHA256: its vmlinux can be kept there.
	cached := filepath.Join(k.Dir, "boot", ".deskhost-vmlinux-"+k.Release)
	v, err := os.ReadFile(cached)
	if err != nil {
		step("extracting vmlinux from the bzImage")
		v, err = kernel.ExtractVmlinux(bz)
		if err != nil {
			return fmt.Errorf("kernel %s: %w (build with boot protocol %s)", k.Release, err, BootBzImage)
		}
		if err := atomicfile.WriteFile(cached, v, 0o644); err != nil {
			step("cannot cache vmlinux: %v", err)
		}
	}
	ok, err := kernel.HasPVHNote(v)
	if err != nil {
		return fmt.Errorf("kernel %s vmlinux: %w", k.Release, err)
	}
	if !ok {
		return fmt.Errorf("kernel %s vmlinux has no PVH entry note: build with boot protocol %s", k.Release, BootBzImage)
	}
	m.Kernel = VmlinuxFile
	return os.WriteFile(filepath.Join(dir, VmlinuxFile), v, 0o644)
}

// AgentPackage is the guest agent's import path.
const AgentPackage = "deskhost/hostd/guestagent"

// BuildAgent builds the guest agent as a static, reproducible binary at out, from the
// deskhost module the current directory belongs to.
func BuildAgent(ctx context.Context, out string) error {
	goBin, err := exec.LookPath("go")
	if err != nil {
		if r := os.Getenv("GOROOT"); r != "" {
			goBin = filepath.Join(r, "bin", "go")
		} else {
			return errors.New("desktop: the go command is needed to build the guest agent (or pass a prebuilt agent)")
		}
	}
	dirOut, err := exec.CommandContext(ctx, goBin, "list", "-f", "{{.Dir}}", AgentPackage).Output()
	if err != nil {
		return fmt.Errorf("desktop: cannot find %s (run from the deskhost checkout): %v", AgentPackage, err)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false",
		"-ldflags=-s -w -buildid=", "-o", out, AgentPackage)
	cmd.Dir = strings.TrimSpace(string(dirOut))
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("desktop: building the guest agent: %v: %s", err, strings.TrimSpace(string(b)))
	}
	return nil
}

// writeInitramfs assembles the initramfs: /init (the agent), /dev/console, the kernel
// modules with /lib/modules/load.order, and mke2fs with its libraries.
func writeInitramfs(k *kernel.Unpacked, agentBin, out string, c initramfs.Compression) (int64, []string, error) {
	a := initramfs.New()
	if err := a.HostFile("/init", agentBin); err != nil {
		return 0, nil, err
	}
	if err := a.Dir("/dev", 0o755); err != nil {
		return 0, nil, err
	}
	if err := a.CharDev("/dev/console", 0o600, 5, 1); err != nil {
		return 0, nil, err
	}
	for _, d := range []string{"/proc", "/sys", "/run", "/sysroot", "/home", "/etc", "/sbin"} {
		if err := a.Dir(d, 0o755); err != nil {
			return 0, nil, err
		}
	}
	if err := a.Dir("/tmp", 0o777|fs.ModeSticky); err != nil {
		return 0, nil, err
	}

	tree, err := kmod.Open(k.ModulesDir)
	if err != nil {
		return 0, nil, err
	}
	res, err := tree.Resolve(Modules)
	if err != nil {
		return 0, nil, err
	}
	var order strings.Builder
	order.WriteString("# deskhost: kernel modules in load order (dependencies first); '?' = optional\n")
	var names []string
	base := "/lib/modules/" + k.Release + "/"
	for _, mod := range res.Load {
		if err := a.HostFile(base+mod.Path, filepath.Join(k.ModulesDir, mod.Path)); err != nil {
			return 0, nil, err
		}
		if mod.Optional {
			order.WriteString("?")
		}
		order.WriteString(base + mod.Path + "\n")
		names = append(names, mod.Name)
	}
	for _, b := range res.Builtin {
		names = append(names, b+" (built in)")
	}
	if err := a.File("/lib/modules/load.order", []byte(order.String()), 0o644); err != nil {
		return 0, nil, err
	}

	mke2fs, err := findTool("mke2fs")
	if err != nil {
		return 0, nil, err
	}
	if _, err := a.AddELF("/sbin/mke2fs", mke2fs); err != nil {
		return 0, nil, err
	}
	if _, err := os.Stat("/etc/mke2fs.conf"); err == nil {
		if err := a.HostFile("/etc/mke2fs.conf", "/etc/mke2fs.conf"); err != nil {
			return 0, nil, err
		}
	}
	if err := a.File("/etc/os-release", []byte(osRelease), 0o644); err != nil {
		return 0, nil, err
	}

	f, err := os.Create(out)
	if err != nil {
		return 0, nil, err
	}
	if err := a.Write(f, c); err != nil {
		f.Close()
		return 0, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, nil, err
	}
	return st.Size(), names, f.Close()
}

func findTool(name string) (string, error) {
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("desktop: %s not found on the build machine (package e2fsprogs)", name)
}

const osRelease = `NAME="deskhost desktop"
ID=deskhost-desktop
PRETTY_NAME="deskhost desktop"
HOME_URL="https://github.com/deskhost"
`

// rootEntries is the content of the root volume.
func rootEntries(release string) []ext4img.Entry {
	dir := func(p string, perm fs.FileMode) ext4img.Entry { return ext4img.Entry{Path: p, Mode: fs.ModeDir | perm} }
	file := func(p, data string) ext4img.Entry {
		return ext4img.Entry{Path: p, Mode: 0o644, Data: []byte(data)}
	}
	return []ext4img.Entry{
		file("/etc/os-release", osRelease+"VERSION_ID="+agent.Version+"\n"),
		file("/etc/hostname", "deskhost-desktop\n"),
		file("/etc/deskhost/image", "desktop agent="+agent.Version+" kernel="+release+"\n"),
		dir("/home", 0o755),
		dir("/root", 0o700),
		dir("/tmp", 0o777|fs.ModeSticky),
		dir("/var", 0o755),
		dir("/var/log", 0o755),
		dir("/var/tmp", 0o777|fs.ModeSticky),
		dir("/usr", 0o755),
		dir("/srv", 0o755),
	}
}

// checkReplaceable refuses an output that exists and is not a previous image (or an
// empty directory): the build replaces the whole directory.
func checkReplaceable(out string) error {
	st, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("desktop: output directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("desktop: output %s exists and is not a directory", out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("desktop: output directory: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(out, ManifestFile)); err != nil {
		return fmt.Errorf("desktop: output directory %s is not empty and holds no %s: not replacing it", out, ManifestFile)
	}
	return nil
}

// swapIn replaces out with dir atomically (renameat2 RENAME_EXCHANGE when out exists).
func swapIn(dir, out string) error {
	if err := syncDir(dir); err != nil {
		return err
	}
	if _, err := os.Lstat(out); err == nil {
		if err := unix.Renameat2(unix.AT_FDCWD, dir, unix.AT_FDCWD, out, unix.RENAME_EXCHANGE); err != nil {
			// Filesystems without RENAME_EXCHANGE: move the old one aside first.
			old := dir + ".old"
			if err := os.Rename(out, old); err != nil {
				return fmt.Errorf("desktop: replacing %s: %w", out, err)
			}
			if err := os.Rename(dir, out); err != nil {
				return fmt.Errorf("desktop: replacing %s: %w", out, err)
			}
			_ = os.RemoveAll(old)
			return syncDir(filepath.Dir(out))
		}
		// dir now holds the old image; the caller removes it.
		return syncDir(filepath.Dir(out))
	}
	if err := os.Rename(dir, out); err != nil {
		return fmt.Errorf("desktop: %w", err)
	}
	return syncDir(filepath.Dir(out))
}

func syncFile(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

func syncDir(p string) error { return syncFile(p) }

// Load reads dir/image.json and checks that the files it names exist and have the
// recorded SHA256 (verify=true) or at least exist (verify=false).
func Load(dir string, verify bool) (*Manifest, error) {
	img, err := desktopimage.Load(dir)
	if err != nil {
		return nil, err
	}
	if verify {
		if err := img.Verify(); err != nil {
			return nil, err
		}
	}
	return &img.Manifest, nil
}
