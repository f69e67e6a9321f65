// Package appliance builds the deskhost appliance image from a profile (package
// profile): Debian's kernel, an initramfs built with u-root's cpio writer (package
// initramfs) holding init as /init, the project's static Go programs, the C userland
// hostd needs taken from the build machine's Debian packages (package userland), the
// kernel modules with their index (package modindex), and the baked host config; then
// the outputs the profile asks for, from the table in package profile:
//
//	OUT/manifest.json        always: versions and sha256 of every input and artifact
//	OUT/pxe/                 pxe: vmlinuz, initrd.img, cmdline, boot.ipxe
//	OUT/disk.img             raw-efi: GPT, ESP with systemd-boot, blank /perm
//
// OUT appears only when everything is written (package outdir).
package appliance

import (
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"

	"deskhost/imagebuild/disk"
	"deskhost/imagebuild/gobuild"
	"deskhost/imagebuild/initramfs"
	"deskhost/imagebuild/kernel"
	"deskhost/imagebuild/kmod"
	"deskhost/imagebuild/outdir"
	"deskhost/imagebuild/profile"
	"deskhost/imagebuild/userland"
	"deskhost/internal/digest"
	"deskhost/internal/hostconfig"
	"deskhost/internal/imagelayout"
	"deskhost/internal/modindex"
	netcfgconfig "deskhost/netcfg/config"
)

// Output file names.
const (
	ManifestFile = "manifest.json"
	PXEDir       = "pxe"
	KernelFile   = "vmlinuz"
	InitrdFile   = "initrd.img"
	CmdlineFile  = "cmdline"
	IPXEFile     = "boot.ipxe"
	DiskFile     = "disk.img"
)

// InitPackage is init's import path; it becomes /init.
const InitPackage = "deskhost/init"

// DefaultEpoch is every timestamp in the image when SOURCE_DATE_EPOCH is not set.
var DefaultEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// Options of a build.
type Options struct {
	Profile  *profile.Profile
	Out      string // output directory
	CacheDir string // kernel downloads
	// SourceDir is a directory inside the deskhost module, where Go programs are built
	// from ("" = the current directory).
	SourceDir string
	Epoch     time.Time // default SOURCE_DATE_EPOCH, else DefaultEpoch
	// Log prints progress; nil is quiet.
	Log func(format string, args ...any)
}

// Manifest is manifest.json.
type Manifest struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Commit  string `json:"commit,omitempty"`
	Go      string `json:"go"`
	Profile struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
	} `json:"profile"`
	Kernel struct {
		Package   string `json:"package"`
		Version   string `json:"version"`
		Release   string `json:"release"`
		DebSHA256 string `json:"debSha256"`
	} `json:"kernel"`
	Cmdline   string `json:"cmdline"`
	Initramfs struct {
		Compression       string `json:"compression"`
		UncompressedBytes int64  `json:"uncompressedBytes"`
		CompressedBytes   int64  `json:"compressedBytes"`
	} `json:"initramfs"`
	Modules    []string          `json:"modules"`
	Builtin    []string          `json:"builtinModules,omitempty"`
	Programs   []Program         `json:"programs"`
	Debian     *userland.Result  `json:"debian"`
	HostConfig string            `json:"hostConfig,omitempty"` // sha256 of the baked config
	Outputs    []string          `json:"outputs"`
	Disk       *disk.Layout      `json:"disk,omitempty"`
	Artifacts  []Artifact        `json:"artifacts"`
	Warnings   []string          `json:"warnings,omitempty"`
	Extra      map[string]string `json:"extra,omitempty"`
}

// Program is a Go program in the image.
type Program struct {
	Package string `json:"package"`
	Path    string `json:"path"`
	SHA256  string `json:"sha256,omitempty"`
	Bytes   int64  `json:"bytes,omitempty"`
	Skipped string `json:"skipped,omitempty"` // why an optional program is not in the image
}

// Artifact is an output file.
type Artifact struct {
	Path   string `json:"path"` // relative to the output directory
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Build builds the image.
func Build(ctx context.Context, o Options) (*Manifest, error) {
	p := o.Profile
	if p == nil {
		return nil, errors.New("appliance: no profile")
	}
	if o.CacheDir == "" {
		return nil, errors.New("appliance: no cache directory")
	}
	log := o.Log
	if log == nil {
		log = func(string, ...any) {}
	}
	start := time.Now()
	step := func(format string, args ...any) {
		log("[%6.1fs] %s", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
	}
	epoch, err := epochOf(o.Epoch)
	if err != nil {
		return nil, err
	}
	out, err := outdir.Begin(o.Out, ManifestFile)
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	defer out.Abort()
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("appliance: cache directory: %w", err)
	}
	// Check the baked host config before the long steps: a bad one is the profile's fault.
	m := &Manifest{Name: p.Name, Cmdline: p.Cmdline(), Go: gobuild.Version(ctx)}
	m.Commit = gobuild.Commit(ctx, o.SourceDir)
	m.Version = p.Version
	if m.Version == "" {
		m.Version = "0"
	}
	if m.Commit != "" {
		m.Version += "+g" + m.Commit
	}
	m.Profile.Path = p.Path
	if p.Path != "" {
		if m.Profile.SHA256, err = digest.File(p.Path); err != nil {
			return nil, fmt.Errorf("appliance: %w", err)
		}
	}
	var baked []byte
	if p.HostConfig != "" {
		if err := CheckBakedConfig(p.HostConfig); err != nil {
			return nil, fmt.Errorf("appliance: profile hostConfig: %w", err)
		}
		if baked, err = os.ReadFile(p.HostConfig); err != nil {
			return nil, fmt.Errorf("appliance: %w", err)
		}
		sum := sha256.Sum256(baked)
		m.HostConfig = hex.EncodeToString(sum[:])
	}

	// Kernel.
	step("kernel package")
	k, err := kernel.Fetch(ctx, kernel.FetchOptions{
		Package: p.Kernel.Package, Version: p.Kernel.Version, Deb: p.Kernel.Deb,
		CacheDir: o.CacheDir, Log: func(f string, a ...any) { step(f, a...) },
	})
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	m.Kernel.Package, m.Kernel.Version, m.Kernel.Release, m.Kernel.DebSHA256 = k.Package, k.Version, k.Release, k.DebSHA256
	step("kernel %s (%s %s)", k.Release, k.Package, k.Version)

	a := initramfs.New()
	if err := skeleton(a); err != nil {
		return nil, err
	}

	// Go programs.
	bin := out.Path(".bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return nil, err
	}
	progs := append([]profile.Program{{Package: InitPackage, Path: "/init"}}, p.Programs...)
	for _, pr := range progs {
		step("building %s", pr.Package)
		f := filepath.Join(bin, strings.ReplaceAll(strings.TrimPrefix(pr.Path, "/"), "/", "_"))
		err := gobuild.Build(ctx, pr.Package, f, gobuild.Options{Dir: o.SourceDir})
		if err != nil {
			if pr.Optional {
				why := err.Error()
				if errors.Is(err, gobuild.ErrNoPackage) {
					why = "package does not exist yet"
				}
				step("WARNING: optional program %s left out: %s", pr.Package, firstLine(why))
				m.Warnings = append(m.Warnings, fmt.Sprintf("%s left out: %s", pr.Package, firstLine(why)))
				m.Programs = append(m.Programs, Program{Package: pr.Package, Path: pr.Path, Skipped: firstLine(why)})
				continue
			}
			return nil, fmt.Errorf("appliance: %w", err)
		}
		if err := a.HostFile(pr.Path, f); err != nil {
			return nil, err
		}
		sum, _ := digest.File(f)
		st, _ := os.Stat(f)
		m.Programs = append(m.Programs, Program{Package: pr.Package, Path: pr.Path, SHA256: sum, Bytes: st.Size()})
	}
	_ = os.RemoveAll(bin)
	// init answers the kernel's module requests as /sbin/modprobe.
	if err := a.Symlink(imagelayout.Modprobe, "/init"); err != nil {
		return nil, err
	}

	// Debian userland.
	step("Debian userland: %d programs, %d plugin globs, %d data paths", len(p.Debian.Programs), len(p.Debian.Plugins), len(p.Debian.Data))
	ul, err := userland.Add(ctx, a, p.Debian)
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	m.Debian = ul
	step("Debian userland: %d files, %.1f MiB from %d packages", ul.Files, float64(ul.Bytes)/(1<<20), len(ul.Packages))
	if err := busyboxApplets(ctx, a); err != nil {
		return nil, err
	}

	// Kernel modules.
	mods, builtin, err := addModules(a, k, p.Kernel)
	if err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	m.Modules, m.Builtin = mods, builtin
	step("kernel modules: %d (with dependencies), %d built in", len(mods), len(builtin))

	// /etc and the image's description.
	if err := writeEtc(a, p.Name, m.Version); err != nil {
		return nil, err
	}
	rel, _ := json.MarshalIndent(imagelayout.Release{Name: p.Name, Version: m.Version, Commit: m.Commit, Kernel: k.Release}, "", "  ")
	if err := a.File(imagelayout.ReleaseFile, append(rel, '\n'), 0o644); err != nil {
		return nil, err
	}
	if baked != nil {
		if err := a.File(imagelayout.BakedConfig, baked, 0o600); err != nil {
			return nil, err
		}
	}
	for _, f := range p.Files {
		mode := fs.FileMode(0o644)
		if f.Mode != "" {
			v, _ := strconv.ParseUint(f.Mode, 8, 32)
			mode = fs.FileMode(v)
		}
		data, err := os.ReadFile(f.Src)
		if err != nil {
			return nil, fmt.Errorf("appliance: %w", err)
		}
		if err := a.File(f.Path, data, mode); err != nil {
			return nil, err
		}
	}

	// The initramfs, written once and compressed.
	step("initramfs: writing (%s)", p.Initramfs.Compression)
	initrd := out.Path(".initrd.img")
	raw, comp, err := writeInitramfs(a, initrd, p.Initramfs.Compression, func(done int64) {
		step("initramfs: %.0f MiB written", float64(done)/(1<<20))
	})
	if err != nil {
		return nil, fmt.Errorf("appliance: initramfs: %w", err)
	}
	m.Initramfs.Compression, m.Initramfs.UncompressedBytes, m.Initramfs.CompressedBytes = p.Initramfs.Compression, raw, comp
	step("initramfs: %.1f MiB, %.1f MiB uncompressed", float64(comp)/(1<<20), float64(raw)/(1<<20))

	// Outputs.
	for _, op := range p.Outputs {
		m.Outputs = append(m.Outputs, op.Format)
		switch op.Format {
		case profile.FormatPXE:
			step("output pxe")
			if err := writePXE(out.Path(PXEDir), k.Vmlinuz, initrd, p, m.Version); err != nil {
				return nil, fmt.Errorf("appliance: pxe: %w", err)
			}
		case profile.FormatRawEFI:
			step("output raw-efi: %s disk, %s ESP", op.Size, op.ESPSize)
			lay, err := disk.Build(out.Path(DiskFile), disk.Options{
				Size: int64(op.Size), ESPSize: int64(op.ESPSize), Kernel: k.Vmlinuz, Initrd: initrd,
				Cmdline: m.Cmdline, Title: p.Name + " " + m.Version, Time: epoch,
				Progress: func(f string, a ...any) { step("raw-efi: "+f, a...) },
			})
			if err != nil {
				return nil, fmt.Errorf("appliance: raw-efi: %w", err)
			}
			m.Disk = lay
		default:
			return nil, fmt.Errorf("appliance: output format %q has no builder", op.Format)
		}
	}
	_ = os.Remove(initrd)

	// Manifest.
	step("manifest: sha256 of the artifacts")
	if err := filepath.WalkDir(out.Tmp, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		r, _ := filepath.Rel(out.Tmp, path)
		sum, err := digest.File(path)
		if err != nil {
			return err
		}
		st, err := e.Info()
		if err != nil {
			return err
		}
		m.Artifacts = append(m.Artifacts, Artifact{Path: r, Bytes: st.Size(), SHA256: sum})
		return nil
	}); err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	sort.Slice(m.Artifacts, func(i, j int) bool { return m.Artifacts[i].Path < m.Artifacts[j].Path })
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(out.Path(ManifestFile), append(b, '\n'), 0o644); err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	if err := out.Commit(); err != nil {
		return nil, fmt.Errorf("appliance: %w", err)
	}
	step("done: %s", out.Out())
	return m, nil
}

// CheckBakedConfig checks a host config for baking into an image: valid (CheckHostConfig),
// and generic. One image boots every host, and its PXE bundle is handed to anyone who
// asks, so the config must hold no secret (an access key's secret, a bind password, a
// RADIUS secret, the console's password hash: give them as files on /perm instead) and
// nothing that belongs to one machine (a NIC's MAC, a host name: the NICs are chosen by
// rule at boot, the name follows the management NIC's MAC or the per-host overrides),
// and no catalog (it is in hostd's store). Every problem is named.
func CheckBakedConfig(path string) error {
	if err := CheckHostConfig(path); err != nil {
		return err
	}
	c, err := hostconfig.Load(path)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range c.InlineSecrets() {
		errs = append(errs, fmt.Errorf("%s holds a secret: an image and its PXE bundle are readable by anyone who can fetch them; give it as a file on /perm (0600) instead (%s)", f, fileFormOf(f)))
	}
	// The catalog lives in hostd's store and a host gets it through the API. hostd imports
	// a config's catalog sections once and refuses them afterwards, so a baked copy would
	// stop every host at its second boot.
	if l, err := c.LegacyCatalog(); err != nil {
		errs = append(errs, err)
	} else if l != nil {
		errs = append(errs, fmt.Errorf("%s: the catalog is not part of an image (every host would import it, then refuse its own config at the next boot); create it through hostd's API (hostd directories, ipgroups, bundles, images register, or aws workspaces) and leave these sections out", strings.Join(l.Sections, ", ")))
	}
	if c.Init.Hostname != "" {
		errs = append(errs, fmt.Errorf("init.hostname %q names one host: a baked config is every host's; set it per host (per-host overrides on /perm, or a config fetched with %s=)", c.Init.Hostname, imagelayout.ParamConfig))
	}
	if b, err := c.Init.NetworkYAML(); err == nil && b != nil {
		if nc, err := netcfgconfig.Decode(b); err == nil {
			for _, n := range []struct {
				field string
				nic   netcfgconfig.NIC
			}{{"management", nc.Interfaces.Management}, {"primary", nc.Interfaces.Primary}} {
				if n.nic.MAC != "" {
					errs = append(errs, fmt.Errorf("init.network.interfaces.%s.mac %s names one host's NIC: leave it out (the NIC is chosen by rule at boot: the one the host network-booted from, else the first with a DHCP lease) or pin it per host", n.field, n.nic.MAC))
				}
			}
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s cannot be baked into an image:\n  %w", path, joinIndented(errs))
	}
	return nil
}

// fileFormOf names the file form of a secret field.
func fileFormOf(field string) string {
	switch {
	case strings.HasSuffix(field, ".secret"):
		return "secretFile"
	case strings.HasSuffix(field, ".bindPassword"):
		return "bindPasswordFile"
	case strings.HasSuffix(field, ".sharedSecret"):
		return "sharedSecretFile"
	case strings.HasSuffix(field, ".passwordHash"):
		return "set the console password on the host's first boot, or fetch the config with " + imagelayout.ParamConfig + "="
	}
	return "a file"
}

func joinIndented(errs []error) error {
	var s []string
	for _, e := range errs {
		s = append(s, e.Error())
	}
	return errors.New(strings.Join(s, "\n  "))
}

// CheckHostConfig checks a host config as hostd and init will: hostconfig's one validator
// (strict, init.network by netcfg's rules, which this package links in; a NIC left to
// init's rules is checked as if pinned).
func CheckHostConfig(path string) error {
	_, err := hostconfig.Load(path)
	return err
}

// LoadManifest reads OUT/manifest.json.
func LoadManifest(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestFile), err)
	}
	return &m, nil
}

func epochOf(t time.Time) (time.Time, error) {
	if !t.IsZero() {
		return t, nil
	}
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n <= 0 {
			return time.Time{}, fmt.Errorf("appliance: SOURCE_DATE_EPOCH=%q is not a positive number of seconds", s)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	return DefaultEpoch, nil
}

// skeleton adds the directories and device nodes every boot needs before init mounts
// anything.
func skeleton(a *initramfs.Archive) error {
	for _, d := range []string{"/dev", "/proc", "/sys", "/run", "/perm", "/etc", "/etc/deskhost", "/etc/libvirt",
		"/usr/bin", "/usr/sbin", "/bin", "/sbin", "/lib/modules", "/var", "/var/lib", "/var/lib/libvirt",
		"/var/cache", "/var/cache/libvirt", "/var/log", "/var/log/libvirt", "/mnt"} {
		if err := a.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := a.Dir("/root", 0o700); err != nil {
		return err
	}
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if err := a.Dir(d, 0o777|fs.ModeSticky); err != nil {
			return err
		}
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	if err := a.CharDev("/dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	return a.Symlink("/var/run", "/run")
}

// busyboxApplets links every applet of /bin/busybox (if the profile put one in the
// image) into place, except those init or real programs provide: the operator shell's
// commands. busybox's halt, poweroff and reboot signal PID 1 (SIGUSR1, SIGUSR2, SIGTERM),
// which init honours.
func busyboxApplets(ctx context.Context, a *initramfs.Archive) error {
	const bb = "/bin/busybox"
	if !a.Has(bb) {
		return nil
	}
	out, err := exec.CommandContext(ctx, bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("appliance: busybox --list-full: %w", err)
	}
	skip := map[string]bool{"init": true, "linuxrc": true, "run-init": true, "switch_root": true, "modprobe": true,
		"insmod": true, "depmod": true, "mke2fs": true, "mkfs.ext2": true}
	for _, l := range strings.Fields(string(out)) {
		p := "/" + l
		if skip[filepath.Base(p)] || a.Has(p) {
			continue
		}
		// A real program of the same name elsewhere on PATH (ip from netcfg? none yet)
		// is preferred by PATH order /usr/sbin:/usr/bin:/sbin:/bin.
		if err := a.Symlink(p, bb); err != nil {
			return err
		}
	}
	return nil
}

// addModules puts the profile's modules and their dependencies into the image with the
// index init reads.
func addModules(a *initramfs.Archive, k *kernel.Unpacked, kp profile.Kernel) (loaded, builtin []string, err error) {
	tree, err := kmod.Open(k.ModulesDir)
	if err != nil {
		return nil, nil, err
	}
	res, err := tree.Resolve(kp.Modules)
	if err != nil {
		return nil, nil, fmt.Errorf("profile kernel.modules: %w", err)
	}
	ix := &modindex.Index{Modules: map[string]*modindex.Module{}}
	base := imagelayout.ModulesRoot + "/" + k.Release + "/"
	for _, mod := range res.Load {
		in, err := tree.Info(mod.Name)
		if err != nil {
			return nil, nil, err
		}
		if err := a.HostFile(base+mod.Path, filepath.Join(k.ModulesDir, mod.Path)); err != nil {
			return nil, nil, err
		}
		ix.Modules[mod.Name] = &modindex.Module{Name: mod.Name, Path: mod.Path, Depends: in.Depends, Aliases: in.Aliases, SoftPre: in.SoftPre}
		loaded = append(loaded, mod.Name)
	}
	in := map[string]bool{}
	for _, n := range loaded {
		in[n] = true
	}
	for _, l := range kp.Load {
		n := modindex.Normalize(l)
		if !in[n] && !tree.Builtin(n) {
			return nil, nil, fmt.Errorf("profile kernel.load: %s is not among kernel.modules (nor built in)", l)
		}
		if in[n] {
			ix.Load = append(ix.Load, n)
		}
	}
	// Dependencies must be in the image; Resolve guarantees it, the index checks it.
	for name, files := range ix.Write() {
		if err := a.File(base+name, files, 0o644); err != nil {
			return nil, nil, err
		}
	}
	if err := a.HostFile(base+"modules.builtin", filepath.Join(k.ModulesDir, "modules.builtin")); err != nil {
		return nil, nil, err
	}
	sort.Strings(loaded)
	return loaded, res.Builtin, nil
}

// countWriter counts bytes and reports progress every 64 MiB.
type countWriter struct {
	w        io.Writer
	n, next  int64
	progress func(int64)
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if c.progress != nil && c.n >= c.next {
		c.progress(c.n)
		c.next = c.n + 64<<20
	}
	return n, err
}

// writeInitramfs writes the archive compressed to path; it returns the uncompressed and
// compressed sizes.
func writeInitramfs(a *initramfs.Archive, path, compression string, progress func(int64)) (int64, int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	var w io.WriteCloser
	switch compression {
	case "zstd":
		// One encoder goroutine: the same input gives the same bytes. The kernel's
		// decompressor handles windows up to 128 MiB; 8 MiB keeps its memory small.
		w, err = zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1),
			zstd.WithWindowSize(8<<20), zstd.WithEncoderCRC(true))
	case "gzip":
		w, err = gzip.NewWriterLevel(f, gzip.BestCompression)
	case "none":
		w = nopCloser{f}
	default:
		err = fmt.Errorf("compression %q", compression)
	}
	if err != nil {
		return 0, 0, err
	}
	cw := &countWriter{w: w, progress: progress, next: 64 << 20}
	if err := a.Write(cw, initramfs.None); err != nil {
		return 0, 0, err
	}
	if err := w.Close(); err != nil {
		return 0, 0, err
	}
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	return cw.n, st.Size(), f.Close()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// writePXE writes the PXE bundle. boot.ipxe names the kernel and initramfs relatively,
// so iPXE fetches them from wherever it fetched the script (HTTP or TFTP). initrd= on the
// kernel line is what Debian's EFI iPXE needs to hand the initramfs over; BIOS iPXE
// ignores it. BOOTIF=${netX/mac} tells init which NIC the host booted from (iPXE's netX
// is the NIC it last used: the one that fetched this script), which makes it the
// management NIC: the image names no NIC itself.
func writePXE(dir, vmlinuz, initrd string, p *profile.Profile, version string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := copyFile(vmlinuz, filepath.Join(dir, KernelFile)); err != nil {
		return err
	}
	if err := os.Rename(initrd, filepath.Join(dir, InitrdFile)); err != nil {
		return err
	}
	// Keep a copy for the next output (raw-efi) at the old place.
	if err := copyFile(filepath.Join(dir, InitrdFile), initrd); err != nil {
		return err
	}
	cmdline := p.Cmdline()
	if err := os.WriteFile(filepath.Join(dir, CmdlineFile), []byte(cmdline+"\n"), 0o644); err != nil {
		return err
	}
	script := fmt.Sprintf(`#!ipxe
# %s %s: served by imagebuild serve (HTTP or TFTP). Paths are relative to this script.
echo Booting %s %s
kernel %s initrd=%s %s=${netX/mac} %s
initrd %s
boot
`, p.Name, version, p.Name, version, KernelFile, InitrdFile, imagelayout.ParamBootIF, cmdline, InitrdFile)
	return os.WriteFile(filepath.Join(dir, IPXEFile), []byte(script), 0o644)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}
