// Package modindex is the kernel module index of the appliance image, in depmod's text
// formats so that standard tools can read it too: imagebuild writes modules.dep,
// modules.alias and modules.softdep for the modules it puts into the image (it has no
// depmod: the modules' own .modinfo is the source), and init reads them to load modules
// at boot (coldplug by modalias) and on the kernel's demand (init doubles as
// /sbin/modprobe).
package modindex

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
)

// File names below /lib/modules/RELEASE.
const (
	DepFile     = "modules.dep"
	AliasFile   = "modules.alias"
	SoftdepFile = "modules.softdep"
	// LoadFile lists the modules to load at every boot, one name a line, whatever the
	// hardware (file systems, bridge, tun, nf_tables, ...). deskhost's own file.
	LoadFile = "deskhost.load"
)

// Module is one module of the index.
type Module struct {
	Name    string   // canonical name (underscores)
	Path    string   // relative to the release directory, e.g. kernel/fs/ext4/ext4.ko
	Depends []string // names of hard dependencies
	Aliases []string // alias patterns (fnmatch), e.g. pci:v00008086d0000100Esv*sd*bc*sc*i*
	SoftPre []string // softdep pre: names or aliases
}

// Index is the modules of one kernel release.
type Index struct {
	Modules map[string]*Module // by name
	// Load is the boot-time list (LoadFile), in order.
	Load []string
}

// Normalize turns a module name into its canonical form (dashes become underscores).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

func nameOf(p string) string { return Normalize(strings.TrimSuffix(path.Base(p), ".ko")) }

// Write renders the index's files, keyed by file name.
func (ix *Index) Write() map[string][]byte {
	names := make([]string, 0, len(ix.Modules))
	for n := range ix.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	var dep, alias, soft, load bytes.Buffer
	for _, n := range names {
		m := ix.Modules[n]
		fmt.Fprintf(&dep, "%s:", m.Path)
		// depmod lists every transitive dependency, the ones to load last first.
		for _, d := range ix.transitive(n) {
			fmt.Fprintf(&dep, " %s", ix.Modules[d].Path)
		}
		dep.WriteByte('\n')
		as := append([]string(nil), m.Aliases...)
		sort.Strings(as)
		for _, a := range as {
			fmt.Fprintf(&alias, "alias %s %s\n", a, n)
		}
		if len(m.SoftPre) > 0 {
			fmt.Fprintf(&soft, "softdep %s pre: %s\n", n, strings.Join(m.SoftPre, " "))
		}
	}
	for _, n := range ix.Load {
		fmt.Fprintln(&load, n)
	}
	return map[string][]byte{DepFile: dep.Bytes(), AliasFile: alias.Bytes(), SoftdepFile: soft.Bytes(), LoadFile: load.Bytes()}
}

// transitive returns name's dependencies in depmod order: the module's direct
// dependencies' dependencies after them, so that loading the list in reverse works.
func (ix *Index) transitive(name string) []string {
	order := ix.order(name, false)
	// order ends with name itself and lists dependencies first; depmod lists them
	// reversed (the last to load first).
	out := make([]string, 0, len(order))
	for i := len(order) - 2; i >= 0; i-- {
		out = append(out, order[i])
	}
	return out
}

// Parse reads an index from its files (as returned by Write; LoadFile and SoftdepFile
// may be missing).
func Parse(files map[string][]byte) (*Index, error) {
	ix := &Index{Modules: map[string]*Module{}}
	dep, ok := files[DepFile]
	if !ok {
		return nil, fmt.Errorf("modindex: no %s", DepFile)
	}
	type pending struct{ name, deps string }
	var deps []pending
	if err := lines(dep, func(n int, l string) error {
		p, rest, ok := strings.Cut(l, ":")
		if !ok || !strings.HasSuffix(p, ".ko") {
			return fmt.Errorf("%s line %d: want \"path.ko: deps...\", got %q", DepFile, n, l)
		}
		name := nameOf(p)
		ix.Modules[name] = &Module{Name: name, Path: p}
		deps = append(deps, pending{name, rest})
		return nil
	}); err != nil {
		return nil, err
	}
	for _, d := range deps {
		// modules.dep lists all transitive dependencies; keep them all: LoadOrder
		// handles the repetition.
		for _, p := range strings.Fields(d.deps) {
			dn := nameOf(p)
			if _, ok := ix.Modules[dn]; !ok {
				return nil, fmt.Errorf("%s: %s depends on %s, which is not in the index", DepFile, d.name, p)
			}
			ix.Modules[d.name].Depends = append(ix.Modules[d.name].Depends, dn)
		}
	}
	if err := lines(files[AliasFile], func(n int, l string) error {
		f := strings.Fields(l)
		if len(f) != 3 || f[0] != "alias" {
			return fmt.Errorf("%s line %d: want \"alias PATTERN MODULE\", got %q", AliasFile, n, l)
		}
		m, ok := ix.Modules[Normalize(f[2])]
		if !ok {
			return nil // an alias of a module that is not in the image
		}
		m.Aliases = append(m.Aliases, f[1])
		return nil
	}); err != nil {
		return nil, err
	}
	if err := lines(files[SoftdepFile], func(n int, l string) error {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "softdep" {
			return fmt.Errorf("%s line %d: want \"softdep MODULE pre: ...\", got %q", SoftdepFile, n, l)
		}
		m, ok := ix.Modules[Normalize(f[1])]
		if !ok {
			return nil
		}
		pre := false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					m.SoftPre = append(m.SoftPre, w)
				}
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	_ = lines(files[LoadFile], func(_ int, l string) error {
		ix.Load = append(ix.Load, Normalize(l))
		return nil
	})
	return ix, nil
}

func lines(b []byte, f func(n int, l string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if err := f(n, l); err != nil {
			return err
		}
	}
	return sc.Err()
}

// Resolve returns the names of the modules a modprobe request for s (a module name or
// an alias such as "fs-vfat" or a device modalias) means: the module itself, or every
// module one of whose alias patterns matches, sorted.
func (ix *Index) Resolve(s string) []string {
	if _, ok := ix.Modules[Normalize(s)]; ok {
		return []string{Normalize(s)}
	}
	var out []string
	for n, m := range ix.Modules {
		for _, a := range m.Aliases {
			if Match(a, s) {
				out = append(out, n)
				break
			}
		}
	}
	sort.Strings(out)
	return out
}

// LoadOrder returns what to load for module name, dependencies first, name last. Soft
// pre-dependencies that are in the index come before it too.
func (ix *Index) LoadOrder(name string) []string { return ix.order(name, true) }

func (ix *Index) order(name string, soft bool) []string {
	var out []string
	seen := map[string]bool{}
	var visit func(n string)
	visit = func(n string) {
		n = Normalize(n)
		if seen[n] {
			return
		}
		seen[n] = true
		m, ok := ix.Modules[n]
		if !ok {
			return
		}
		if soft {
			for _, s := range m.SoftPre {
				for _, c := range ix.Resolve(s) {
					visit(c)
				}
			}
		}
		for _, d := range m.Depends {
			visit(d)
		}
		out = append(out, n)
	}
	visit(name)
	return out
}

// Match reports whether a modalias string matches an alias pattern: fnmatch with '*',
// '?' and '[...]' as the kernel's modules.alias patterns use them. Unlike path.Match,
// '/' is an ordinary character.
func Match(pattern, s string) bool {
	// Iterative glob with backtracking on the last '*'.
	p, i := 0, 0
	starP, starI := -1, 0
	for i < len(s) {
		if p < len(pattern) {
			switch c := pattern[p]; c {
			case '*':
				starP, starI = p, i
				p++
				continue
			case '?':
				p++
				i++
				continue
			case '[':
				if end, ok := matchClass(pattern[p:], s[i]); end > 0 {
					if ok {
						p += end
						i++
						continue
					}
				} else if s[i] == '[' { // unterminated class: a literal '['
					p++
					i++
					continue
				}
			default:
				if c == s[i] {
					p++
					i++
					continue
				}
			}
		}
		if starP < 0 {
			return false
		}
		starI++
		p, i = starP+1, starI
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// matchClass matches c against the class at the start of pat ("[abc]", "[a-z]",
// "[!x]"); it returns the class's length (0 if unterminated) and whether c is in it.
func matchClass(pat string, c byte) (int, bool) {
	i := 1
	neg := false
	if i < len(pat) && (pat[i] == '!' || pat[i] == '^') {
		neg = true
		i++
	}
	in := false
	first := true
	for i < len(pat) && (pat[i] != ']' || first) {
		first = false
		lo := pat[i]
		hi := lo
		if i+2 < len(pat) && pat[i+1] == '-' && pat[i+2] != ']' {
			hi = pat[i+2]
			i += 2
		}
		if lo <= c && c <= hi {
			in = true
		}
		i++
	}
	if i >= len(pat) {
		return 0, false
	}
	return i + 1, in != neg
}

// ReadAll is a helper for readers of an fs: it reads the index files from open.
func ReadAll(open func(name string) (io.ReadCloser, error)) (*Index, error) {
	files := map[string][]byte{}
	for _, n := range []string{DepFile, AliasFile, SoftdepFile, LoadFile} {
		r, err := open(n)
		if err != nil {
			if n == DepFile {
				return nil, fmt.Errorf("modindex: %w", err)
			}
			continue
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("modindex: %s: %w", n, err)
		}
		files[n] = b
	}
	return Parse(files)
}
