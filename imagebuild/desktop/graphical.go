package desktop

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"deskhost/hostd/agent"
	"deskhost/imagebuild/ext4img"
	"deskhost/internal/digest"
	"deskhost/internal/guestservice"
)

// Profiles of `imagebuild desktop --profile`.
const (
	ProfileTiny      = "tiny"      // the agent as init, a text status screen: fast tests
	ProfileGraphical = "graphical" // Debian 12 + Xfce with automatic login, the agent as a service
)

// The graphical image (ProfileGraphical) is a Debian 12 system made by mmdebstrap from
// Debian packages only: systemd, LightDM and Xfce, the guest agent as a systemd service
// (deskhost-agent.service, agent -service), and deskhost-user.service, which mounts the
// user volume on /home (formatting it when blank), takes the WorkSpace's user from the
// metadata service (else deskhost.user=), creates it and sets LightDM's automatic login.
// Its kernel and initramfs are Debian's (bzImage boot); hostd boots it as the tiny one:
// same image.json, root volume as vda, user volume as vdb, the agent channel, VGA.
//
// The Debian system is cached as a tarball under the cache directory keyed by everything
// that goes into it (suite, mirror, packages, initramfs hook), and the downloaded .debs
// too, so a rebuild only adds deskhost's files and makes the filesystem.

// GraphicalPackages are installed on top of Debian's minbase variant (no Recommends).
var GraphicalPackages = []string{
	"systemd-sysv", "udev", "dbus", "dbus-x11", "linux-image-amd64", "initramfs-tools",
	"curl", "ca-certificates", "iproute2", "e2fsprogs", "sudo",
	"xserver-xorg-core", "xserver-xorg-input-libinput", "x11-xserver-utils",
	"lightdm", "lightdm-gtk-greeter",
	"xfce4-session", "xfwm4", "xfdesktop4", "xfce4-panel", "xfce4-settings", "xfconf",
	"xfce4-terminal", "thunar", "fonts-dejavu-core", "adwaita-icon-theme",
}

// GraphicalCmdline is the graphical image's base kernel command line (hostd appends
// deskhost.workspace= and deskhost.user=; deskhost.display=WxH sizes the display).
// net.ifnames=0 keeps hostd's eth0 (management) / eth1 (primary) names.
const GraphicalCmdline = "root=LABEL=" + graphicalRootLabel + " rw net.ifnames=0 console=tty0 console=ttyS0,115200 quiet systemd.show_status=1 panic=-1"

const (
	graphicalRootLabel = "deskhost-root"
	graphicalRootUUID  = "8c0f5d2e-3a71-4b9c-9e14-6d2b7f0a9c35"
	graphicalSuite     = "bookworm"
	// graphicalCacheVersion changes the cache key when the way the tarball is made changes.
	graphicalCacheVersion = "1"
)

// initramfsHook limits Debian's initramfs to what a WorkSpace's root needs (MODULES=list
// plus these): a smaller initrd boots faster under TCG.
const initramfsHook = `#!/bin/sh
set -e
mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"
echo MODULES=list > "$1/etc/initramfs-tools/conf.d/deskhost.conf"
cat > "$1/etc/initramfs-tools/hooks/deskhost" <<'H'
#!/bin/sh
[ "$1" = prereqs ] && exit 0
. /usr/share/initramfs-tools/hook-functions
manual_add_modules virtio_pci virtio_blk virtio_scsi ext4 crc32c_generic
H
chmod 755 "$1/etc/initramfs-tools/hooks/deskhost"
`

//go:embed graphical
var graphicalFiles embed.FS

// graphicalUnits are enabled in the image; graphicalMasked never run (they would only
// slow the boot or touch the network on their own).
var (
	graphicalUnits  = []string{"systemd-networkd.service", "deskhost-user.service", "deskhost-agent.service", "lightdm.service"}
	graphicalMasked = []string{"systemd-networkd-wait-online.service", "apt-daily.timer", "apt-daily-upgrade.timer",
		"e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer", "getty@tty1.service"}
)

func buildGraphical(ctx context.Context, o Options, tmp string, step func(string, ...any)) (*Manifest, error) {
	for _, tool := range []string{"mmdebstrap", "tar", "mke2fs", "qemu-img"} {
		if _, err := findTool(tool); err != nil {
			return nil, fmt.Errorf("desktop: the graphical profile needs %s (scripts/packages/imagebuild.txt)", tool)
		}
	}
	tarball, err := debianTarball(ctx, o, step)
	if err != nil {
		return nil, err
	}

	rootfs := filepath.Join(tmp, ".rootfs")
	if err := os.Mkdir(rootfs, 0o755); err != nil {
		return nil, err
	}
	step("unpacking %s", filepath.Base(tarball))
	if err := runCmd(ctx, "tar", "-C", rootfs, "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", tarball); err != nil {
		return nil, err
	}

	agentBin := o.AgentBinary
	if agentBin == "" {
		step("building the guest agent")
		agentBin = filepath.Join(tmp, ".agent")
		if err := BuildAgent(ctx, agentBin); err != nil {
			return nil, err
		}
	}
	step("adding the guest agent and deskhost's files")
	if err := addGraphicalFiles(ctx, rootfs, agentBin); err != nil {
		return nil, err
	}

	// Debian's kernel and initramfs (made by initramfs-tools inside the chroot).
	kver, err := bootFiles(rootfs)
	if err != nil {
		return nil, err
	}
	for src, dst := range map[string]string{"vmlinuz-" + kver: VmlinuzFile, "initrd.img-" + kver: InitrdFile} {
		b, err := os.ReadFile(filepath.Join(rootfs, "boot", src))
		if err != nil {
			return nil, fmt.Errorf("desktop: kernel files: %w", err)
		}
		if err := os.WriteFile(filepath.Join(tmp, dst), b, 0o644); err != nil {
			return nil, err
		}
	}
	pkgVersion := dpkgVersion(filepath.Join(rootfs, "var/lib/dpkg/status"), "linux-image-"+kver)

	// Root volume: the tree plus room to work in (hostd's child may be larger still).
	used, err := treeSize(rootfs)
	if err != nil {
		return nil, err
	}
	sizeMiB := (used*5/4)>>20 + 768
	sizeMiB = (sizeMiB + 255) / 256 * 256
	step("root volume (ext4, %d MiB for %.0f MiB of files)", sizeMiB, float64(used)/(1<<20))
	raw := filepath.Join(tmp, ".root.raw")
	if err := runCmd(ctx, "mke2fs", "-q", "-F", "-t", "ext4", "-L", graphicalRootLabel, "-U", graphicalRootUUID,
		"-E", "root_owner=0:0", "-d", rootfs, raw, fmt.Sprintf("%dM", sizeMiB)); err != nil {
		return nil, err
	}
	if err := os.RemoveAll(rootfs); err != nil {
		return nil, err
	}
	if err := ext4img.ToQcow2(ctx, raw, filepath.Join(tmp, RootFile)); err != nil {
		return nil, err
	}
	_ = os.Remove(raw)
	_ = os.Remove(filepath.Join(tmp, ".agent"))

	cmdline := o.Cmdline
	if cmdline == "" || cmdline == DefaultCmdline {
		cmdline = GraphicalCmdline
	}
	return &Manifest{
		Name: "desktop-graphical", OS: "linux",
		Kernel: VmlinuzFile, Initrd: InitrdFile, Root: RootFile, RootFormat: "qcow2", RootVirtualSize: sizeMiB << 20,
		Cmdline: cmdline, AgentChannel: agent.ChannelName, AgentVersion: agent.Version,
		BootProtocol: BootBzImage, KernelVersion: kver, KernelPackage: "linux-image-" + kver, KernelPackageVersion: pkgVersion,
		InitrdCompression: "initramfs-tools",
	}, nil
}

// debianTarball returns the cached mmdebstrap tarball, making it first if needed.
func debianTarball(ctx context.Context, o Options, step func(string, ...any)) (string, error) {
	cache, err := filepath.Abs(o.CacheDir)
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "graphical")
	debs := filepath.Join(dir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return "", fmt.Errorf("desktop: cache directory: %w", err)
	}
	hookPath := filepath.Join(dir, "initramfs-hook.sh")
	if err := os.WriteFile(hookPath, []byte(initramfsHook), 0o755); err != nil {
		return "", err
	}
	args := []string{"--variant=minbase", "--mode=root", "--format=tar",
		"--include=" + strings.Join(GraphicalPackages, ","),
		"--essential-hook=" + hookPath,
		// Keep the downloaded .debs between builds.
		"--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/partial",
		"--setup-hook=sync-in " + debs + " /var/cache/apt/archives",
		"--customize-hook=sync-out /var/cache/apt/archives " + debs,
		"--skip=download/empty",
		graphicalSuite}
	if o.Mirror != "" {
		args = append(args, o.Mirror)
	}
	// The key is what goes into the system, not where the cache is (make and the tests
	// name the same cache by relative and absolute paths).
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n%s\n%s\n", graphicalCacheVersion, initramfsHook, graphicalSuite, o.Mirror, strings.Join(GraphicalPackages, ","))
	tarball := filepath.Join(dir, "debian-"+hex.EncodeToString(h.Sum(nil))[:16]+".tar")
	if _, err := os.Stat(tarball); err == nil {
		step("Debian system from the cache: %s", tarball)
		return tarball, nil
	}
	step("mmdebstrap %s: %d packages and their dependencies (a few minutes)", graphicalSuite, len(GraphicalPackages))
	part := tarball + ".part"
	start := time.Now()
	cmd := exec.CommandContext(ctx, "mmdebstrap", append(args, part)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		_ = os.Remove(part)
		return "", fmt.Errorf("desktop: mmdebstrap: %v: %s", err, tail(out.String(), 2000))
	}
	if err := os.Rename(part, tarball); err != nil {
		return "", err
	}
	step("mmdebstrap done in %.0fs", time.Since(start).Seconds())
	return tarball, nil
}

// addGraphicalFiles writes deskhost's files and the agent into the tree and enables the
// units (systemctl works offline on a tree).
func addGraphicalFiles(ctx context.Context, rootfs, agentBin string) error {
	err := fs.WalkDir(graphicalFiles, "graphical", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := strings.TrimPrefix(p, "graphical")
		dst := filepath.Join(rootfs, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := graphicalFiles.ReadFile(p)
		if err != nil {
			return err
		}
		mode := fs.FileMode(0o644)
		if strings.HasPrefix(rel, "/usr/lib/deskhost/") {
			mode = 0o755
		}
		_ = os.Remove(dst) // e.g. Debian's /etc/fstab
		return os.WriteFile(dst, b, mode)
	})
	if err != nil {
		return fmt.Errorf("desktop: deskhost files: %w", err)
	}
	b, err := os.ReadFile(agentBin)
	if err != nil {
		return err
	}
	// The agent's service units and scripts, shared with imported images (the agent's adopt).
	if err := guestservice.Install(rootfs, b); err != nil {
		return err
	}
	image := fmt.Sprintf("desktop-graphical agent=%s suite=%s\n", agent.Version, graphicalSuite)
	if err := os.MkdirAll(filepath.Join(rootfs, "etc/deskhost"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/deskhost/image"), []byte(image), 0o644); err != nil {
		return err
	}
	// Every WorkSpace gets its own machine-id at first boot.
	if err := os.WriteFile(filepath.Join(rootfs, "etc/machine-id"), nil, 0o444); err != nil {
		return err
	}
	// The image's own systemctl, offline in the tree (the build host may have no systemd).
	if err := runCmd(ctx, "chroot", append([]string{rootfs, "systemctl", "enable"}, graphicalUnits...)...); err != nil {
		return err
	}
	if err := runCmd(ctx, "chroot", append([]string{rootfs, "systemctl", "mask"}, graphicalMasked...)...); err != nil {
		return err
	}
	return runCmd(ctx, "chroot", rootfs, "systemctl", "set-default", "graphical.target")
}

// bootFiles finds the one kernel version in rootfs/boot.
func bootFiles(rootfs string) (string, error) {
	m, _ := filepath.Glob(filepath.Join(rootfs, "boot", "vmlinuz-*"))
	if len(m) != 1 {
		return "", fmt.Errorf("desktop: want one kernel in the Debian system's /boot, found %d", len(m))
	}
	return strings.TrimPrefix(filepath.Base(m[0]), "vmlinuz-"), nil
}

// dpkgVersion reads a package's version from a dpkg status file ("" if absent).
func dpkgVersion(status, pkg string) string {
	f, err := os.Open(status)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	in := false
	for sc.Scan() {
		l := sc.Text()
		switch {
		case l == "":
			in = false
		case strings.HasPrefix(l, "Package: "):
			in = strings.TrimPrefix(l, "Package: ") == pkg
		case in && strings.HasPrefix(l, "Version: "):
			return strings.TrimPrefix(l, "Version: ")
		}
	}
	return ""
}

// treeSize is the bytes of the tree's files, each rounded up to 4 KiB blocks.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		n += (info.Size() + 4095) / 4096 * 4096
		return nil
	})
	return n, err
}

func runCmd(ctx context.Context, name string, args ...string) error {
	bin, err := findTool(name)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("desktop: %s %s: %v: %s", name, strings.Join(args, " "), err, tail(out.String(), 2000))
	}
	return nil
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}

// writeManifest records the files' SHA256 and writes image.json into dir.
func writeManifest(dir string, m *Manifest) error {
	m.SHA256 = map[string]string{}
	files := []string{m.Kernel, m.Initrd, m.Root}
	sort.Strings(files)
	for _, f := range files {
		sum, err := digest.File(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		m.SHA256[f] = sum
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return err
	}
	for _, f := range append(files, ManifestFile) {
		if err := syncFile(filepath.Join(dir, f)); err != nil {
			return err
		}
	}
	return nil
}
