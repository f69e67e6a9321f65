// Package elfdeps finds what a dynamically linked ELF program needs to run in another
// root: its interpreter (PT_INTERP, the dynamic loader) and the shared libraries of its
// DT_NEEDED entries, recursively, searched the way the glibc loader does (DT_RPATH,
// DT_RUNPATH with $ORIGIN, the default directories, /etc/ld.so.conf). It is what ldd
// shows, without running the program.
package elfdeps

import (
	"bufio"
	"debug/elf"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// File is one file to copy: Src on the build machine (symlinks resolved), Dst the
// absolute path inside the image. Dst is where the loader will look: the interpreter's
// PT_INTERP path, or the search directory a library was found in.
type File struct {
	Src string
	Dst string
}

// DefaultDirs are searched after RPATH/RUNPATH, in the order of Debian's amd64 loader
// (its built-in trusted directories), so a library is put where the image's loader
// finds it without an ld.so.cache.
var DefaultDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64",
	"/lib", "/usr/lib",
}

// Resolver resolves dependencies against a root directory (normally "/").
type Resolver struct {
	// Root is the filesystem the program and libraries are read from; "" means "/".
	Root string
	// ExtraDirs are searched after DefaultDirs (e.g. /etc/ld.so.conf's directories,
	// which the image's loader only finds with an ld.so.cache or LD_LIBRARY_PATH).
	ExtraDirs []string
}

// Resolve returns the files program (an absolute path below Root) needs besides itself:
// the interpreter and all libraries, sorted by Dst. A statically linked program needs
// none. A library that cannot be found is an error naming it and who needs it.
func Resolve(program string) ([]File, error) {
	r := &Resolver{ExtraDirs: LdSoConfDirs("/", "/etc/ld.so.conf")}
	return r.Resolve(program)
}

func (r *Resolver) host(p string) string {
	if r.Root == "" || r.Root == "/" {
		return p
	}
	return filepath.Join(r.Root, p)
}

// Resolve is the package-level Resolve against r.Root.
func (r *Resolver) Resolve(program string) ([]File, error) {
	f, err := elf.Open(r.host(program))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", program, err)
	}
	defer f.Close()
	class, machine := f.Class, f.Machine

	out := map[string]File{}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("%s: reading PT_INTERP: %w", program, err)
		}
		ip := strings.TrimRight(string(b), "\x00")
		src, err := filepath.EvalSymlinks(r.host(ip))
		if err != nil {
			return nil, fmt.Errorf("%s: interpreter %s: %w", program, ip, err)
		}
		out[ip] = File{Src: src, Dst: ip}
	}

	type item struct {
		path string // path inside Root where the object was found
		by   string
	}
	seen := map[string]bool{} // sonames done
	queue := []item{{path: program}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		obj, err := elf.Open(r.host(it.path))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", it.path, err)
		}
		needed, _ := obj.DynString(elf.DT_NEEDED)
		rpath, _ := obj.DynString(elf.DT_RPATH)
		runpath, _ := obj.DynString(elf.DT_RUNPATH)
		obj.Close()
		origin := filepath.Dir(it.path)
		var dirs []string
		if len(runpath) == 0 {
			dirs = append(dirs, expandPath(rpath, origin)...)
		}
		dirs = append(dirs, expandPath(runpath, origin)...)
		dirs = append(dirs, DefaultDirs...)
		dirs = append(dirs, r.ExtraDirs...)
		for _, lib := range needed {
			if seen[lib] {
				continue
			}
			found := ""
			if strings.Contains(lib, "/") {
				found = lib
			} else {
				for _, d := range dirs {
					cand := filepath.Join(d, lib)
					if r.compatible(cand, class, machine) {
						found = cand
						break
					}
				}
			}
			if found == "" {
				return nil, fmt.Errorf("%s: library %s (needed by %s) not found in %s", program, lib, it.path, strings.Join(dirs, ":"))
			}
			seen[lib] = true
			src, err := filepath.EvalSymlinks(r.host(found))
			if err != nil {
				return nil, fmt.Errorf("%s: library %s: %w", program, found, err)
			}
			out[found] = File{Src: src, Dst: found}
			queue = append(queue, item{path: found, by: it.path})
		}
	}
	files := make([]File, 0, len(out))
	for _, f := range out {
		files = append(files, f)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Dst < files[j].Dst })
	return files, nil
}

// compatible reports whether p exists and is an ELF object of the program's class and
// machine (so a 32-bit library of the same name is skipped, as the loader does).
func (r *Resolver) compatible(p string, class elf.Class, machine elf.Machine) bool {
	f, err := elf.Open(r.host(p))
	if err != nil {
		return false
	}
	defer f.Close()
	return f.Class == class && f.Machine == machine
}

func expandPath(entries []string, origin string) []string {
	var out []string
	for _, e := range entries {
		for _, d := range strings.Split(e, ":") {
			if d == "" {
				continue
			}
			d = strings.ReplaceAll(d, "${ORIGIN}", origin)
			d = strings.ReplaceAll(d, "$ORIGIN", origin)
			out = append(out, filepath.Clean(d))
		}
	}
	return out
}

// LdSoConfDirs returns the directories listed in an ld.so.conf (following include
// globs), relative to root.
func LdSoConfDirs(root, conf string) []string {
	var dirs []string
	seen := map[string]bool{}
	var read func(p string, depth int)
	read = func(p string, depth int) {
		if depth > 8 || seen[p] {
			return
		}
		seen[p] = true
		f, err := os.Open(filepath.Join(root, p))
		if err != nil {
			return
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if i := strings.IndexByte(l, '#'); i >= 0 {
				l = strings.TrimSpace(l[:i])
			}
			if l == "" {
				continue
			}
			if pat, ok := strings.CutPrefix(l, "include "); ok {
				pat = strings.TrimSpace(pat)
				if !filepath.IsAbs(pat) {
					pat = filepath.Join(filepath.Dir(p), pat)
				}
				matches, _ := filepath.Glob(filepath.Join(root, pat))
				sort.Strings(matches)
				for _, m := range matches {
					rel, _ := filepath.Rel(root, m)
					read("/"+rel, depth+1)
				}
				continue
			}
			dirs = append(dirs, filepath.Clean(l))
		}
	}
	read(conf, 0)
	return dirs
}

// IsDynamic reports whether program has an interpreter (is dynamically linked).
func IsDynamic(program string) (bool, error) {
	f, err := elf.Open(program)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true, nil
		}
	}
	return false, nil
}
