// Package userland copies the C userland the appliance needs (libvirtd, virtlogd, qemu,
// qemu-img, mke2fs, ...) from the build machine's installed Debian packages into an
// initramfs: programs with their loader and shared libraries, the plugins they dlopen
// (libvirt's drivers, qemu's modules) with theirs, and data files (ROMs, keymaps, CPU
// maps). It records which Debian packages, at which versions, the files came from.
package userland

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"deskhost/imagebuild/initramfs"
	"deskhost/imagebuild/profile"
)

// Package is a Debian package files were taken from.
type Package struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Result says what was added.
type Result struct {
	Files      int       `json:"files"`
	Bytes      int64     `json:"bytes"`
	Packages   []Package `json:"packages"`
	Unpackaged []string  `json:"unpackaged,omitempty"` // files no package owns
	Skipped    []string  `json:"skipped,omitempty"`    // data symlinks to directories or nowhere
}

// Add adds the files d lists to a.
func Add(ctx context.Context, a *initramfs.Archive, d profile.Debian) (*Result, error) {
	c := &collector{a: a, exclude: d.Exclude, srcs: map[string]bool{}, res: &Result{}}
	for _, p := range d.Programs {
		if err := c.elf(p); err != nil {
			return nil, err
		}
	}
	for _, g := range d.Plugins {
		m, err := c.glob(g)
		if err != nil {
			return nil, err
		}
		for _, p := range m {
			if err := c.elf(p); err != nil {
				return nil, fmt.Errorf("%w (leave it out with debian.exclude)", err)
			}
		}
	}
	for _, g := range d.Data {
		m, err := c.glob(g)
		if err != nil {
			return nil, err
		}
		for _, p := range m {
			if err := c.data(p); err != nil {
				return nil, err
			}
		}
	}
	if err := c.packages(ctx); err != nil {
		return nil, err
	}
	return c.res, nil
}

type collector struct {
	a       *initramfs.Archive
	exclude []string
	srcs    map[string]bool // build machine files added (resolved paths)
	res     *Result
}

func (c *collector) excluded(p string) bool {
	for _, g := range c.exclude {
		if ok, _ := filepath.Match(g, p); ok {
			return true
		}
	}
	return false
}

func (c *collector) glob(g string) ([]string, error) {
	m, err := filepath.Glob(g)
	if err != nil {
		return nil, fmt.Errorf("userland: %s: %w", g, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("userland: %s: no such file on the build machine", g)
	}
	var out []string
	for _, p := range m {
		if !c.excluded(p) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out, nil
}

func (c *collector) count(src string) {
	real, err := filepath.EvalSymlinks(src)
	if err != nil {
		real = src
	}
	if c.srcs[real] {
		return
	}
	c.srcs[real] = true
	if st, err := os.Stat(real); err == nil {
		c.res.Files++
		c.res.Bytes += st.Size()
	}
}

// elf adds a program or shared object at its own path, with what it needs.
func (c *collector) elf(p string) error {
	if c.a.Has(p) {
		return nil // a library already pulled in by an earlier program
	}
	added, err := c.a.AddELF(p, p)
	if err != nil {
		return fmt.Errorf("userland: %w", err)
	}
	c.count(p)
	for _, f := range added {
		c.count(f.Src)
	}
	return nil
}

// data adds a file, or a directory's files, as they are.
func (c *collector) data(p string) error {
	st, err := os.Lstat(p)
	if err != nil {
		return fmt.Errorf("userland: %w", err)
	}
	if !st.IsDir() {
		return c.dataFile(p)
	}
	return filepath.WalkDir(p, func(q string, e fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("userland: %w", err)
		}
		if c.excluded(q) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if e.IsDir() {
			return nil
		}
		return c.dataFile(q)
	})
}

func (c *collector) dataFile(p string) error {
	if c.a.Has(p) {
		return nil
	}
	// Symlinks (qemu's ROM directory links into seabios and ipxe) are copied as the
	// file they point to: the link's target may not be in the image.
	st, err := os.Stat(p)
	if err != nil || !st.Mode().IsRegular() {
		c.res.Skipped = append(c.res.Skipped, p)
		return nil
	}
	if err := c.a.HostFile(p, p); err != nil {
		return fmt.Errorf("userland: %w", err)
	}
	c.count(p)
	return nil
}

// packages finds the Debian packages owning the added files (dpkg -S) and their versions.
func (c *collector) packages(ctx context.Context) error {
	paths := make([]string, 0, len(c.srcs))
	for p := range c.srcs {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	owner := map[string]string{} // path -> package
	lookup := func(ps []string) error {
		if len(ps) == 0 {
			return nil
		}
		// dpkg -S exits 1 when some path is not found, and still prints the rest.
		cmd := exec.CommandContext(ctx, "dpkg-query", append([]string{"-S"}, ps...)...)
		cmd.Env = append(os.Environ(), "LC_ALL=C")
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Run(); err != nil && out.Len() == 0 {
			if _, ok := err.(*exec.ExitError); !ok {
				return fmt.Errorf("userland: dpkg-query -S: %w", err)
			}
		}
		sc := bufio.NewScanner(&out)
		for sc.Scan() {
			l := sc.Text()
			if strings.HasPrefix(l, "diversion by") {
				continue
			}
			pkgs, path, ok := strings.Cut(l, ": ")
			if !ok {
				continue
			}
			pkg := strings.TrimSpace(strings.Split(pkgs, ",")[0])
			pkg, _, _ = strings.Cut(pkg, ":") // drop :amd64
			owner[path] = pkg
		}
		return nil
	}
	if err := lookup(paths); err != nil {
		return err
	}
	// Debian 12 is usr-merged but dpkg knows many libraries by their /lib path.
	var alt []string
	altOf := map[string]string{}
	for _, p := range paths {
		if _, ok := owner[p]; ok {
			continue
		}
		a := ""
		if rest, ok := strings.CutPrefix(p, "/usr"); ok {
			a = rest
		} else {
			a = "/usr" + p
		}
		alt = append(alt, a)
		altOf[a] = p
	}
	if err := lookup(alt); err != nil {
		return err
	}
	set := map[string]bool{}
	for _, p := range paths {
		pkg, ok := owner[p]
		if !ok {
			for a, orig := range altOf {
				if orig == p {
					pkg, ok = owner[a]
				}
			}
		}
		if !ok {
			c.res.Unpackaged = append(c.res.Unpackaged, p)
			continue
		}
		set[pkg] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(names) == 0 {
		return nil
	}
	cmd := exec.CommandContext(ctx, "dpkg-query", append([]string{"-W", "-f=${Package} ${Version}\n"}, names...)...)
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.Output()
	if err != nil && len(out) == 0 {
		return fmt.Errorf("userland: dpkg-query -W: %w", err)
	}
	seen := map[string]bool{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) == 2 && !seen[f[0]] {
			seen[f[0]] = true
			c.res.Packages = append(c.res.Packages, Package{Name: f[0], Version: f[1]})
		}
	}
	sort.Slice(c.res.Packages, func(i, j int) bool { return c.res.Packages[i].Name < c.res.Packages[j].Name })
	return nil
}

// PackageOf returns the Debian package owning path on the build machine, or "".
func PackageOf(ctx context.Context, path string) string {
	out, err := exec.CommandContext(ctx, "dpkg-query", "-S", path).Output()
	if err != nil {
		return ""
	}
	pkg, _, _ := strings.Cut(string(out), ": ")
	pkg, _, _ = strings.Cut(strings.Split(pkg, ",")[0], ":")
	return strings.TrimSpace(pkg)
}
