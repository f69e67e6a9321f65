// Package initramfs builds reproducible Linux initramfs archives (newc cpio, optionally
// gzip-compressed) with u-root's pkg/cpio: the same entries give byte-identical output.
// Entries are written sorted by path, every parent directory is written (mode 0755
// unless added explicitly) before its children, and times, owners and inode numbers are
// fixed.
package initramfs

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"deskhost/imagebuild/elfdeps"

	"github.com/u-root/u-root/pkg/cpio"
)

// Compression of the written archive.
type Compression string

const (
	None Compression = "none"
	Gzip Compression = "gzip"
)

// Archive collects entries. The zero value is not usable: call New.
type Archive struct {
	recs map[string]cpio.Record
	// elfSrcs maps a build machine file added by AddELF to its path in the archive, so
	// that a file needed under two names (the loader as /lib64/ld-linux-x86-64.so.2 and
	// as libc's DT_NEEDED) is stored once, the second name a symlink.
	elfSrcs map[string]string
}

// New returns an empty archive.
func New() *Archive { return &Archive{recs: map[string]cpio.Record{}, elfSrcs: map[string]string{}} }

func clean(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("initramfs: path %q is not absolute", p)
	}
	c := path.Clean(p)
	if c == "/" {
		return "", fmt.Errorf("initramfs: cannot add the root directory")
	}
	return c[1:], nil
}

func (a *Archive) put(p string, r cpio.Record) error {
	name, err := clean(p)
	if err != nil {
		return err
	}
	if old, ok := a.recs[name]; ok {
		// Adding the same directory twice is harmless; anything else is a mistake.
		if old.Mode&cpio.S_IFMT == cpio.S_IFDIR && r.Mode&cpio.S_IFMT == cpio.S_IFDIR {
			a.recs[name] = r
			return nil
		}
		return fmt.Errorf("initramfs: %s added twice", p)
	}
	r.Name = name
	a.recs[name] = r
	return nil
}

// unixPerm converts permission bits plus setuid, setgid and sticky to their Unix values.
func unixPerm(m os.FileMode) uint64 {
	p := uint64(m.Perm())
	if m&os.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&os.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&os.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

// Dir adds a directory (perm may include os.ModeSticky, e.g. 0o777|os.ModeSticky).
func (a *Archive) Dir(p string, perm os.FileMode) error {
	return a.put(p, cpio.Directory("", unixPerm(perm)))
}

// File adds a regular file with the given contents.
func (a *Archive) File(p string, data []byte, perm os.FileMode) error {
	return a.put(p, cpio.StaticRecord(data, cpio.Info{Mode: cpio.S_IFREG | unixPerm(perm)}))
}

// HostFile adds a copy of the build machine's file src (symlinks followed) at p, keeping
// its permission bits.
func (a *Archive) HostFile(p, src string) error {
	st, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("initramfs: %s is not a regular file", src)
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	return a.File(p, data, st.Mode()&(os.ModePerm|os.ModeSetuid|os.ModeSetgid|os.ModeSticky))
}

// Symlink adds a symbolic link p -> target.
func (a *Archive) Symlink(p, target string) error {
	return a.put(p, cpio.Symlink("", target))
}

// CharDev adds a character device node.
func (a *Archive) CharDev(p string, perm os.FileMode, major, minor uint64) error {
	return a.put(p, cpio.CharDev("", unixPerm(perm), major, minor))
}

// AddELF adds the build machine's program src at dst together with everything it needs
// to run: its dynamic loader and shared libraries (see package elfdeps), each at the
// path the loader looks for it. Files already in the archive (a library shared by two
// programs) are not added twice; a file needed under a second name becomes a symlink.
// It returns the files added besides the program.
func (a *Archive) AddELF(dst, src string) ([]elfdeps.File, error) {
	deps, err := elfdeps.Resolve(src)
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if err := a.HostFile(dst, src); err != nil {
		return nil, err
	}
	var added []elfdeps.File
	for _, d := range deps {
		name, err := clean(d.Dst)
		if err != nil {
			return nil, err
		}
		if _, ok := a.recs[name]; ok {
			continue
		}
		if first, ok := a.elfSrcs[d.Src]; ok {
			if err := a.Symlink(d.Dst, first); err != nil {
				return nil, err
			}
			added = append(added, d)
			continue
		}
		if err := a.HostFile(d.Dst, d.Src); err != nil {
			return nil, err
		}
		a.elfSrcs[d.Src] = d.Dst
		added = append(added, d)
	}
	return added, nil
}

// Has reports whether p is in the archive.
func (a *Archive) Has(p string) bool {
	name, err := clean(p)
	if err != nil {
		return false
	}
	_, ok := a.recs[name]
	return ok
}

// Records returns the entries as written: the root directory, then every path sorted,
// with missing parent directories added (0755), inode numbers assigned in order, and
// cpio.MakeAllReproducible applied.
func (a *Archive) Records() []cpio.Record {
	all := map[string]cpio.Record{}
	for name, r := range a.recs {
		all[name] = r
		for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
			if _, ok := a.recs[d]; !ok {
				all[d] = cpio.Directory(d, 0o755)
			}
		}
	}
	names := make([]string, 0, len(all))
	for n := range all {
		names = append(names, n)
	}
	// Sort component by component: a directory is directly followed by its contents.
	sort.Slice(names, func(i, j int) bool { return lessPath(names[i], names[j]) })
	recs := make([]cpio.Record, 0, len(names)+1)
	// The root directory itself: 0755 (cpio.WriteRecordsAndDirs would make it 0777).
	recs = append(recs, cpio.Directory(".", 0o755))
	for _, n := range names {
		r := all[n]
		r.Name = n
		recs = append(recs, r)
	}
	for i := range recs {
		recs[i].Ino = uint64(i + 1)
		recs[i].NLink = 1
		if recs[i].Mode&cpio.S_IFMT == cpio.S_IFDIR {
			recs[i].NLink = 2
		}
	}
	cpio.MakeAllReproducible(recs)
	return recs
}

// lessPath orders paths component by component.
func lessPath(a, b string) bool {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] != bs[i] {
			return as[i] < bs[i]
		}
	}
	return len(as) < len(bs)
}

// Write writes the archive (with its trailer), compressed as c.
func (a *Archive) Write(w io.Writer, c Compression) error {
	var out io.Writer = w
	var gz *gzip.Writer
	switch c {
	case None, "":
	case Gzip:
		var err error
		// Header without name or time: reproducible.
		gz, err = gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		out = gz
	default:
		return fmt.Errorf("initramfs: unknown compression %q", c)
	}
	cw := cpio.Newc.Writer(out)
	if err := cpio.WriteRecords(cw, a.Records()); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if err := cpio.WriteTrailer(cw); err != nil {
		return fmt.Errorf("initramfs: %w", err)
	}
	if gz != nil {
		return gz.Close()
	}
	return nil
}

// Bytes returns the written archive.
func (a *Archive) Bytes(c Compression) ([]byte, error) {
	var b bytes.Buffer
	if err := a.Write(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
