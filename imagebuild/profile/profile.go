// Package profile is the appliance image's build profile: one strict YAML file that says
// which kernel and modules, which of the project's Go programs, which Debian files, which
// baked host config, and which outputs to build. Decoding is strict (an unknown key is an
// error naming it), every file the profile names must exist (the error names the key and
// the file), and sizes are written like "2GiB".
//
//	name: deskhost
//	version: "0.4"
//	kernel:
//	  package: linux-image-amd64
//	  cmdline: quiet panic=10
//	  modules: [virtio_pci, virtio_net, e1000e, ext4, nf_tables, bridge, tun, kvm_intel]
//	  load: [ext4, bridge, tun, nf_tables]
//	initramfs: {compression: zstd}
//	hostConfig: host-qemu.yaml
//	programs:
//	  - {package: deskhost/hostd, path: /usr/bin/hostd}
//	debian:
//	  programs: [/usr/sbin/libvirtd]
//	  plugins: [/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/*.so]
//	  data: [/usr/share/qemu/keymaps]
//	outputs:
//	  - format: pxe
//	  - {format: raw-efi, size: 2GiB, espSize: 256MiB}
package profile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"deskhost/internal/strictyaml"
)

// FixedCmdline is the part of the kernel command line every appliance image has: consoles
// on the VGA text console and the first serial port (the last console= is /dev/console:
// the serial line, where init's boot log and panics go), and init_on_free=1, which
// hostd's memory hygiene depends on. A profile adds to it and cannot take it away.
const FixedCmdline = "console=tty0 console=ttyS0,115200 init_on_free=1"

// Output formats.
const (
	FormatPXE    = "pxe"     // kernel, initramfs, cmdline, boot.ipxe
	FormatRawEFI = "raw-efi" // GPT disk: EFI System Partition (systemd-boot) + /perm
)

// Formats is the table of output formats: what each one is and which keys it takes.
var Formats = map[string]struct {
	Summary string
	Keys    []string // keys besides "format"
}{
	FormatPXE:    {"kernel (vmlinuz), initramfs (initrd.img), kernel command line (cmdline) and an iPXE script (boot.ipxe) in pxe/", nil},
	FormatRawEFI: {"raw GPT disk image disk.img: EFI System Partition booting with systemd-boot, and a blank /perm partition that init formats on first boot", []string{"size", "espSize"}},
}

// Compressions of the initramfs.
var Compressions = []string{"zstd", "gzip", "none"}

// Profile is a parsed profile. Paths in it are absolute (relative ones were taken
// relative to the profile's directory).
type Profile struct {
	Name       string    `yaml:"name"`
	Version    string    `yaml:"version"`
	Kernel     Kernel    `yaml:"kernel"`
	Initramfs  Initramfs `yaml:"initramfs"`
	HostConfig string    `yaml:"hostConfig"`
	Programs   []Program `yaml:"programs"`
	Debian     Debian    `yaml:"debian"`
	Files      []File    `yaml:"files"`
	Outputs    []Output  `yaml:"outputs"`

	// Path is the profile file (set by Load).
	Path string `yaml:"-"`
}

// Kernel says which Debian kernel and which of its modules.
type Kernel struct {
	Package string `yaml:"package"` // Debian package or metapackage; default linux-image-amd64
	Version string `yaml:"version"` // pin Package's version
	Deb     string `yaml:"deb"`     // a local linux-image-*.deb instead of apt (offline builds)
	// Cmdline is appended to FixedCmdline.
	Cmdline string `yaml:"cmdline"`
	// Modules are put into the image with their dependencies; hardware drivers among them
	// are loaded when init finds matching hardware, the others on the kernel's demand.
	Modules []string `yaml:"modules"`
	// Load are loaded at every boot whatever the hardware (must be among Modules or
	// built in).
	Load []string `yaml:"load"`
}

// Initramfs options.
type Initramfs struct {
	Compression string `yaml:"compression"` // zstd (default), gzip, none
}

// Program is one of the project's Go programs, built static for the image.
type Program struct {
	Package string `yaml:"package"` // import path, e.g. deskhost/hostd
	Path    string `yaml:"path"`    // where in the image, e.g. /usr/bin/hostd
	// Optional programs are left out (with a warning, recorded in the manifest) when
	// their package does not exist or does not build.
	Optional bool `yaml:"optional"`
}

// Debian lists files taken from the build machine's installed Debian packages.
type Debian struct {
	// Programs are added with their dynamic loader and shared libraries.
	Programs []string `yaml:"programs"`
	// Plugins are shared objects programs dlopen (libvirt drivers, qemu modules): added,
	// with their libraries, at their own paths. Globs allowed.
	Plugins []string `yaml:"plugins"`
	// Data are files or directories copied as they are (ROMs, keymaps, CPU maps). Globs
	// allowed.
	Data []string `yaml:"data"`
	// Exclude are globs of plugin or data paths to leave out.
	Exclude []string `yaml:"exclude"`
}

// File is an extra file for the image from the build machine or the repository.
type File struct {
	Src  string `yaml:"src"`
	Path string `yaml:"path"`
	Mode string `yaml:"mode"` // octal, default 0644
}

// Output is one output to build.
type Output struct {
	Format  string `yaml:"format"`
	Size    Size   `yaml:"size"`    // raw-efi: whole disk (default 2GiB)
	ESPSize Size   `yaml:"espSize"` // raw-efi: EFI System Partition (default 256MiB)
}

// Size is a byte count written as "2GiB", "256MiB", "512KiB" or a plain number.
type Size int64

var sizeRe = regexp.MustCompile(`^([0-9]+)\s*(KiB|MiB|GiB|TiB|)$`)

func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(n.Value))
	if n.Kind != yaml.ScalarNode || m == nil {
		return fmt.Errorf("line %d: size %q: want a number with KiB, MiB, GiB or TiB", n.Line, n.Value)
	}
	v, err := strconv.ParseInt(m[1], 10, 64)
	if err != nil {
		return fmt.Errorf("line %d: size %q: %w", n.Line, n.Value, err)
	}
	shift := map[string]uint{"": 0, "KiB": 10, "MiB": 20, "GiB": 30, "TiB": 40}[m[2]]
	if v > (1<<62)>>shift {
		return fmt.Errorf("line %d: size %q is too large", n.Line, n.Value)
	}
	*s = Size(v << shift)
	return nil
}

func (s Size) String() string {
	for _, u := range []struct {
		n     string
		shift uint
	}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if s > 0 && int64(s)%(1<<u.shift) == 0 {
			return fmt.Sprintf("%d%s", int64(s)>>u.shift, u.n)
		}
	}
	return strconv.FormatInt(int64(s), 10)
}

// Defaults.
const (
	DefaultDiskSize = Size(2 << 30)
	DefaultESPSize  = Size(256 << 20)
	// MinESPSize is FAT32's floor (65,525 clusters of 512 bytes) rounded up.
	MinESPSize = Size(40 << 20)
	MinPerm    = Size(64 << 20)
)

// Load reads, decodes strictly and checks the profile at path.
func Load(path string) (*Profile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("profile: %w", err)
	}
	p, err := Parse(b, filepath.Dir(abs))
	if err != nil {
		return nil, fmt.Errorf("profile %s: %w", path, err)
	}
	p.Path = abs
	return p, nil
}

// Parse decodes a profile strictly, makes its relative paths relative to dir, fills in
// defaults and checks it, including that every file it names exists.
func Parse(b []byte, dir string) (*Profile, error) {
	var p Profile
	if err := strictyaml.Decode(b, &p); err != nil {
		return nil, err
	}
	rel := func(s string) string {
		if s == "" || filepath.IsAbs(s) {
			return s
		}
		return filepath.Join(dir, s)
	}
	p.HostConfig = rel(p.HostConfig)
	p.Kernel.Deb = rel(p.Kernel.Deb)
	for i := range p.Files {
		p.Files[i].Src = rel(p.Files[i].Src)
	}
	if p.Initramfs.Compression == "" {
		p.Initramfs.Compression = "zstd"
	}
	for i := range p.Outputs {
		o := &p.Outputs[i]
		if o.Format == FormatRawEFI {
			if o.Size == 0 {
				o.Size = DefaultDiskSize
			}
			if o.ESPSize == 0 {
				o.ESPSize = DefaultESPSize
			}
		}
	}
	if err := p.check(); err != nil {
		return nil, err
	}
	return &p, nil
}

var (
	nameRe    = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)
	versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z.+~-]{0,39}$`)
	modRe     = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	imgPathRe = regexp.MustCompile(`^(/[A-Za-z0-9._+@-]+)+$`)
)

func (p *Profile) check() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !nameRe.MatchString(p.Name) {
		bad("name %q: required, lower-case letters, digits and '-', at most 32", p.Name)
	}
	if p.Version != "" && !versionRe.MatchString(p.Version) {
		bad("version %q: letters, digits and . + ~ -", p.Version)
	}
	// Kernel.
	if p.Kernel.Deb != "" {
		if p.Kernel.Package != "" || p.Kernel.Version != "" {
			bad("kernel: deb excludes package and version")
		}
		mustExist(&errs, "kernel.deb", p.Kernel.Deb)
	}
	for _, f := range strings.Fields(p.Kernel.Cmdline) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "init_on_free":
			if v != "1" && v != "on" {
				bad("kernel.cmdline: %s: init_on_free=1 is fixed (hostd's memory hygiene needs it)", f)
			}
		case "console":
			bad("kernel.cmdline: %s: the consoles are fixed (%s)", f, FixedCmdline)
		case "init", "rdinit":
			bad("kernel.cmdline: %s: the appliance's init is fixed", f)
		}
	}
	mods := map[string]bool{}
	if len(p.Kernel.Modules) == 0 {
		bad("kernel.modules: required (at least the disk, NIC and file system drivers)")
	}
	for i, m := range p.Kernel.Modules {
		if !modRe.MatchString(m) {
			bad("kernel.modules[%d] %q: not a module name", i, m)
		}
		mods[strings.ReplaceAll(m, "-", "_")] = true
	}
	for i, m := range p.Kernel.Load {
		if !modRe.MatchString(m) {
			bad("kernel.load[%d] %q: not a module name", i, m)
		}
	}
	if !slicesContain(Compressions, p.Initramfs.Compression) {
		bad("initramfs.compression %q: want one of %s", p.Initramfs.Compression, strings.Join(Compressions, ", "))
	}
	if p.HostConfig != "" {
		mustExist(&errs, "hostConfig", p.HostConfig)
	}
	// Programs.
	paths := map[string]string{"/init": "init"}
	claim := func(key, path string) {
		if !imgPathRe.MatchString(path) {
			bad("%s: image path %q: absolute, plain characters", key, path)
			return
		}
		if prev, ok := paths[path]; ok {
			bad("%s: image path %s is already %s", key, path, prev)
		}
		paths[path] = key
	}
	for i, pr := range p.Programs {
		key := fmt.Sprintf("programs[%d]", i)
		if pr.Package == "" || strings.HasPrefix(pr.Package, ".") || strings.HasPrefix(pr.Package, "/") {
			bad("%s.package %q: an import path such as deskhost/hostd", key, pr.Package)
		}
		claim(key+".path", pr.Path)
	}
	// Debian files.
	for i, s := range p.Debian.Programs {
		key := fmt.Sprintf("debian.programs[%d]", i)
		if !filepath.IsAbs(s) || strings.ContainsAny(s, "*?[") {
			bad("%s %q: an absolute path without wildcards", key, s)
			continue
		}
		mustExist(&errs, key, s)
	}
	for _, l := range []struct {
		key  string
		list []string
	}{{"debian.plugins", p.Debian.Plugins}, {"debian.data", p.Debian.Data}} {
		for i, g := range l.list {
			key := fmt.Sprintf("%s[%d]", l.key, i)
			if !filepath.IsAbs(g) {
				bad("%s %q: an absolute path or glob", key, g)
				continue
			}
			m, err := filepath.Glob(g)
			if err != nil {
				bad("%s %q: %v", key, g, err)
			} else if len(m) == 0 {
				bad("%s: %s: no such file on the build machine (is its Debian package installed? scripts/install-deps.sh)", key, g)
			}
		}
	}
	for i, g := range p.Debian.Exclude {
		if _, err := filepath.Match(g, ""); err != nil {
			bad("debian.exclude[%d] %q: %v", i, g, err)
		}
	}
	for i, f := range p.Files {
		key := fmt.Sprintf("files[%d]", i)
		mustExist(&errs, key+".src", f.Src)
		claim(key+".path", f.Path)
		if f.Mode != "" {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o7777 {
				bad("%s.mode %q: an octal mode such as 0644", key, f.Mode)
			}
		}
	}
	// Outputs.
	if len(p.Outputs) == 0 {
		bad("outputs: at least one of %s", strings.Join(FormatNames(), ", "))
	}
	seen := map[string]bool{}
	for i, o := range p.Outputs {
		key := fmt.Sprintf("outputs[%d]", i)
		f, ok := Formats[o.Format]
		if !ok {
			bad("%s.format %q: want one of %s", key, o.Format, strings.Join(FormatNames(), ", "))
			continue
		}
		if seen[o.Format] {
			bad("%s: format %s given twice", key, o.Format)
		}
		seen[o.Format] = true
		for _, k := range []struct {
			name string
			set  bool
		}{{"size", o.Size != 0}, {"espSize", o.ESPSize != 0}} {
			if k.set && !slicesContain(f.Keys, k.name) {
				bad("%s.%s: not a key of format %s", key, k.name, o.Format)
			}
		}
		if o.Format == FormatRawEFI {
			if o.ESPSize < MinESPSize {
				bad("%s.espSize %s: at least %s (FAT32)", key, o.ESPSize, MinESPSize)
			}
			if o.Size < o.ESPSize+MinPerm+2<<20 {
				bad("%s.size %s: at least espSize + %s for /perm + 2MiB for the partition tables", key, o.Size, MinPerm)
			}
			if o.Size%(1<<20) != 0 || o.ESPSize%(1<<20) != 0 {
				bad("%s: size and espSize must be whole MiB", key)
			}
		}
	}
	return errors.Join(errs...)
}

// Has reports whether the profile asks for output format f.
func (p *Profile) Has(f string) bool {
	for _, o := range p.Outputs {
		if o.Format == f {
			return true
		}
	}
	return false
}

// Output returns the output of format f.
func (p *Profile) Output(f string) (Output, bool) {
	for _, o := range p.Outputs {
		if o.Format == f {
			return o, true
		}
	}
	return Output{}, false
}

// Cmdline is the image's full kernel command line.
func (p *Profile) Cmdline() string {
	if c := strings.Join(strings.Fields(p.Kernel.Cmdline), " "); c != "" {
		return FixedCmdline + " " + c
	}
	return FixedCmdline
}

// FormatNames lists the output formats, sorted.
func FormatNames() []string {
	n := make([]string, 0, len(Formats))
	for k := range Formats {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

func mustExist(errs *[]error, key, path string) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			*errs = append(*errs, fmt.Errorf("%s: %s: no such file", key, path))
			return
		}
		*errs = append(*errs, fmt.Errorf("%s: %w", key, err))
	}
}

func slicesContain(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
