// Package kernel fetches the Debian kernel package (linux-image-amd64) into a cache with
// apt-get download (never installing it), unpacks it with dpkg-deb, and turns its
// bzImage into an uncompressed vmlinux for fast PVH boots under TCG.
package kernel

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"

	"deskhost/internal/digest"
)

// DefaultPackage is the Debian metapackage that depends on the current kernel.
const DefaultPackage = "linux-image-amd64"

// ErrDownload wraps a failed apt-get download (no network, no mirror): the environment,
// not the input, is at fault.
var ErrDownload = errors.New("kernel package download failed")

// Logf prints progress.
type Logf func(format string, args ...any)

// Unpacked is a kernel package unpacked in the cache.
type Unpacked struct {
	Package    string // linux-image-6.1.0-56-amd64
	Version    string // 6.1.192-2
	Deb        string // path of the .deb in the cache
	DebSHA256  string
	Dir        string // the unpacked tree
	Release    string // 6.1.0-56-amd64 (uname -r)
	Vmlinuz    string // Dir/boot/vmlinuz-RELEASE
	ModulesDir string // Dir/lib/modules/RELEASE
	Config     string // Dir/boot/config-RELEASE
}

// FetchOptions says which kernel to fetch.
type FetchOptions struct {
	// Package is a Debian package name: a linux-image-* package or a metapackage such
	// as linux-image-amd64 that depends on one. Empty means DefaultPackage.
	Package string
	// Version pins the package version (of Package); empty means apt's candidate.
	Version string
	// Deb is a local .deb to use instead of downloading (offline builds).
	Deb string
	// CacheDir holds downloads and unpacked trees (kernel/ below it).
	CacheDir string
	// UpdateLists runs apt-get update before resolving Package, so the candidate comes
	// from fresh lists: a fresh machine's lists are empty or stale, and a stale candidate
	// may already be gone from the mirror. Ignored with Deb.
	UpdateLists bool
	Log         Logf
}

// Fetch returns the unpacked kernel package, downloading and unpacking it into the cache
// only when it is not there yet.
func Fetch(ctx context.Context, o FetchOptions) (*Unpacked, error) {
	if o.Log == nil {
		o.Log = func(string, ...any) {}
	}
	if o.CacheDir == "" {
		return nil, errors.New("kernel: no cache directory")
	}
	dir := filepath.Join(o.CacheDir, "kernel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("kernel cache: %w", err)
	}
	u := &Unpacked{}
	if o.Deb != "" {
		name, version, err := debIdentity(ctx, o.Deb)
		if err != nil {
			return nil, err
		}
		u.Package, u.Version, u.Deb = name, version, o.Deb
	} else {
		pkg := o.Package
		if pkg == "" {
			pkg = DefaultPackage
		}
		if o.UpdateLists {
			if err := updateLists(ctx, o.Log); err != nil {
				return nil, err
			}
		}
		name, version, sha, err := resolvePackage(ctx, pkg, o.Version)
		if err != nil {
			return nil, err
		}
		u.Package, u.Version = name, version
		u.Deb = filepath.Join(dir, debFileName(name, version))
		if err := download(ctx, dir, name, version, sha, u.Deb, o.Log); err != nil {
			return nil, err
		}
	}
	sum, err := digest.File(u.Deb)
	if err != nil {
		return nil, err
	}
	u.DebSHA256 = sum
	u.Dir = filepath.Join(dir, "unpacked", u.Package+"_"+u.Version+"_"+sum[:12])
	if _, err := os.Stat(filepath.Join(u.Dir, ".complete")); err != nil {
		o.Log("unpacking %s", filepath.Base(u.Deb))
		if err := unpack(ctx, u.Deb, u.Dir); err != nil {
			return nil, err
		}
	}
	if err := u.locate(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Unpacked) locate() error {
	ents, err := os.ReadDir(filepath.Join(u.Dir, "lib", "modules"))
	if err != nil {
		return fmt.Errorf("%s has no lib/modules: is it a kernel image package? (%v)", u.Package, err)
	}
	for _, e := range ents {
		if e.IsDir() {
			if u.Release != "" {
				return fmt.Errorf("%s holds several kernels (%s, %s)", u.Package, u.Release, e.Name())
			}
			u.Release = e.Name()
		}
	}
	if u.Release == "" {
		return fmt.Errorf("%s has no kernel release below lib/modules", u.Package)
	}
	u.Vmlinuz = filepath.Join(u.Dir, "boot", "vmlinuz-"+u.Release)
	u.Config = filepath.Join(u.Dir, "boot", "config-"+u.Release)
	u.ModulesDir = filepath.Join(u.Dir, "lib", "modules", u.Release)
	if _, err := os.Stat(u.Vmlinuz); err != nil {
		return fmt.Errorf("%s: no kernel: %w", u.Package, err)
	}
	return nil
}

// ReadConfig reads the kernel's build configuration (boot/config-RELEASE) into a map of
// CONFIG_X -> value ("y", "m", ...).
func (u *Unpacked) ReadConfig() (map[string]string, error) {
	b, err := os.ReadFile(u.Config)
	if err != nil {
		return nil, err
	}
	cfg := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if k, v, ok := strings.Cut(l, "="); ok && strings.HasPrefix(k, "CONFIG_") {
			cfg[k] = strings.Trim(v, `"`)
		}
	}
	return cfg, nil
}

// debFileName is how apt-get download names a package file (':' of an epoch as %3a).
func debFileName(name, version string) string {
	return name + "_" + strings.ReplaceAll(version, ":", "%3a") + "_amd64.deb"
}

var (
	depRe     = regexp.MustCompile(`^(linux-image-[^\s(|,]+)\s*\(=\s*([^)\s]+)\)`)
	releaseRe = regexp.MustCompile(`^linux-image-\d`) // a real kernel package, not a metapackage
)

// resolvePackage finds the package to download: the candidate (or pinned) version of
// pkg, following a metapackage to the linux-image-RELEASE package it depends on. It
// returns the SHA256 apt expects for the file.
func resolvePackage(ctx context.Context, pkg, version string) (name, ver, sha string, err error) {
	for hop := 0; hop < 3; hop++ {
		// Without a version, apt-cache show --no-all-versions shows the candidate.
		fields, err := aptShow(ctx, pkg, version)
		if err != nil {
			return "", "", "", err
		}
		// A real kernel package ships files; a metapackage only depends on one.
		next := ""
		for _, d := range strings.Split(fields["Depends"], ",") {
			if m := depRe.FindStringSubmatch(strings.TrimSpace(d)); m != nil {
				next, version = m[1], m[2]
				break
			}
		}
		if next == "" || releaseRe.MatchString(pkg) {
			return pkg, fields["Version"], fields["SHA256"], nil
		}
		pkg = next
	}
	return "", "", "", fmt.Errorf("kernel package %s: too many metapackage hops", pkg)
}

func aptShow(ctx context.Context, pkg, version string) (map[string]string, error) {
	spec := pkg
	if version != "" {
		spec += "=" + version
	}
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", spec)
	if err != nil {
		return nil, fmt.Errorf("kernel package %s: %w (run apt-get update? is the name right?)", spec, err)
	}
	fields := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if l == "" {
			if len(fields) > 0 {
				break // first stanza only
			}
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			fields[k] = strings.TrimSpace(v)
		}
	}
	if fields["Package"] == "" {
		return nil, fmt.Errorf("kernel package %s: apt knows no installable version (run apt-get update? is the name right?)", spec)
	}
	return fields, nil
}

// updateLists refreshes apt's package lists (apt-get update).
func updateLists(ctx context.Context, log Logf) error {
	log("refreshing apt's package lists (apt-get update)")
	if _, err := run(ctx, "", "apt-get", "update", "-q", "-o", "APT::Sandbox::User=root"); err != nil {
		return fmt.Errorf("%w: apt-get update: %v", ErrDownload, err)
	}
	return nil
}

func download(ctx context.Context, dir, name, version, sha, dest string, log Logf) error {
	if sum, err := digest.File(dest); err == nil {
		if sha == "" || sum == sha {
			log("kernel package %s %s: cached", name, version)
			return nil
		}
		log("kernel package %s: cached file does not match apt's SHA256: downloading again", filepath.Base(dest))
	}
	tmp, err := os.MkdirTemp(dir, ".download-")
	if err != nil {
		return fmt.Errorf("kernel cache: %w", err)
	}
	defer os.RemoveAll(tmp)
	log("downloading %s %s (apt-get download)", name, version)
	// The sandbox user _apt cannot write into our cache directory.
	if _, err := run(ctx, tmp, "apt-get", "download", "-q", "-o", "APT::Sandbox::User=root", name+"="+version); err != nil {
		return fmt.Errorf("%w: %v", ErrDownload, err)
	}
	got := filepath.Join(tmp, debFileName(name, version))
	sum, err := digest.File(got)
	if err != nil {
		return fmt.Errorf("downloading kernel package: %w", err)
	}
	if sha != "" && sum != sha {
		return fmt.Errorf("downloaded %s has SHA256 %s, apt expects %s", filepath.Base(got), sum, sha)
	}
	return os.Rename(got, dest)
}

// debIdentity reads Package and Version of a local .deb.
func debIdentity(ctx context.Context, deb string) (name, version string, err error) {
	if _, err := os.Stat(deb); err != nil {
		return "", "", fmt.Errorf("kernel package: %w", err)
	}
	out, err := run(ctx, "", "dpkg-deb", "--showformat=${Package} ${Version}", "--show", deb)
	if err != nil {
		return "", "", fmt.Errorf("kernel package %s: %w", deb, err)
	}
	f := strings.Fields(out)
	if len(f) != 2 {
		return "", "", fmt.Errorf("kernel package %s: cannot read its name and version", deb)
	}
	if !strings.HasPrefix(f[0], "linux-image-") {
		return "", "", fmt.Errorf("kernel package %s is %s, not a linux-image-* package", deb, f[0])
	}
	return f[0], f[1], nil
}

// unpack extracts deb into dir (through a temporary directory renamed when complete).
func unpack(ctx context.Context, deb, dir string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".unpack-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if _, err := run(ctx, "", "dpkg-deb", "-x", deb, tmp); err != nil {
		return fmt.Errorf("unpacking kernel package: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), nil, 0o644); err != nil {
		return err
	}
	// dir only ever appears complete (renamed from a finished temporary directory). If
	// another build (a parallel test) got there first, use its copy.
	if err := os.Rename(tmp, dir); err != nil {
		if _, err2 := os.Stat(filepath.Join(dir, ".complete")); err2 == nil {
			return nil
		}
		return fmt.Errorf("unpacking kernel package: %w", err)
	}
	return nil
}

func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	if _, err := exec.LookPath(name); err != nil {
		return "", fmt.Errorf("%s not found (install the packages in scripts/packages/imagebuild.txt): %w", name, err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = strings.TrimSpace(stdout.String())
		}
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, msg)
	}
	return stdout.String(), nil
}
