// Package kmod reads Linux kernel modules (.ko) the way modprobe would, without depmod's
// output: each module's dependencies come from its own .modinfo ELF section (depends=,
// softdep=, alias=), and modules.builtin says what is compiled in. Resolve turns a list
// of wanted modules into the order to load them in.
package kmod

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
)

// Info is what a module's .modinfo section says.
type Info struct {
	Name     string   // name= (underscores), or the file name
	Path     string   // relative to the modules directory, e.g. kernel/fs/ext4/ext4.ko
	Depends  []string // depends=: hard dependencies, module names
	SoftPre  []string // softdep= pre: names or aliases to load first if available
	SoftPost []string // softdep= post:
	Aliases  []string // alias=
	Vermagic string   // vermagic=
}

// Normalize turns a module name into its canonical form (dashes become underscores).
func Normalize(name string) string { return strings.ReplaceAll(name, "-", "_") }

// ParseModinfo parses the NUL-separated key=value strings of a .modinfo section.
func ParseModinfo(sec []byte) (Info, error) {
	var in Info
	for _, kv := range bytes.Split(sec, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok {
			continue
		}
		switch k {
		case "name":
			in.Name = Normalize(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d = strings.TrimSpace(d); d != "" {
					in.Depends = append(in.Depends, Normalize(d))
				}
			}
		case "softdep":
			pre, post := parseSoftdep(v)
			in.SoftPre = append(in.SoftPre, pre...)
			in.SoftPost = append(in.SoftPost, post...)
		case "alias":
			in.Aliases = append(in.Aliases, v)
		case "vermagic":
			in.Vermagic = strings.TrimSpace(v)
		}
	}
	return in, nil
}

// parseSoftdep parses "pre: a b post: c". Names before any pre: or post: (some modules
// declare softdep=gcm) are ignored, as modprobe does.
func parseSoftdep(v string) (pre, post []string) {
	var cur *[]string
	for _, f := range strings.Fields(v) {
		switch f {
		case "pre:":
			cur = &pre
		case "post:":
			cur = &post
		default:
			if cur != nil {
				*cur = append(*cur, f)
			}
		}
	}
	return pre, post
}

// ReadInfo reads the .modinfo section of the .ko at path.
func ReadInfo(path string) (Info, error) {
	f, err := elf.Open(path)
	if err != nil {
		if strings.HasSuffix(path, ".xz") || strings.HasSuffix(path, ".zst") || strings.HasSuffix(path, ".gz") {
			return Info{}, fmt.Errorf("%s: compressed modules are not supported", path)
		}
		return Info{}, fmt.Errorf("%s: %w", path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return Info{}, fmt.Errorf("%s: no .modinfo section (not a kernel module?)", path)
	}
	data, err := sec.Data()
	if err != nil {
		return Info{}, fmt.Errorf("%s: reading .modinfo: %w", path, err)
	}
	in, err := ParseModinfo(data)
	if err != nil {
		return Info{}, fmt.Errorf("%s: %w", path, err)
	}
	if in.Name == "" {
		in.Name = Normalize(strings.TrimSuffix(filepath.Base(path), ".ko"))
	}
	return in, nil
}

// Tree is the modules of one kernel: /lib/modules/RELEASE.
type Tree struct {
	Dir     string
	Release string

	paths   map[string]string // name -> relative path, from file names
	builtin map[string]bool
	// builtinAliases are the aliases of built-in modules (modules.builtin.modinfo).
	builtinAliases map[string]bool

	mu      sync.Mutex
	infos   map[string]Info // name -> info, read on demand
	aliases map[string][]string
}

// Open indexes the modules below dir (a /lib/modules/RELEASE directory): it lists the .ko
// files and reads modules.builtin. Module metadata is read on demand.
func Open(dir string) (*Tree, error) {
	t := &Tree{Dir: dir, Release: filepath.Base(dir), paths: map[string]string{}, builtin: map[string]bool{}, infos: map[string]Info{}}
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("kernel modules: %w", err)
	}
	t.builtin = ParseBuiltin(b)
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin.modinfo")); err == nil {
		t.builtinAliases = parseBuiltinAliases(b)
	}
	compressed := 0
	err = filepath.WalkDir(filepath.Join(dir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			return nil
		}
		if strings.HasSuffix(name, ".ko.xz") || strings.HasSuffix(name, ".ko.zst") || strings.HasSuffix(name, ".ko.gz") {
			compressed++
			return nil
		}
		if !strings.HasSuffix(name, ".ko") {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		mod := Normalize(strings.TrimSuffix(name, ".ko"))
		if prev, dup := t.paths[mod]; dup {
			return fmt.Errorf("module %s found twice: %s and %s", mod, prev, rel)
		}
		t.paths[mod] = rel
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel modules in %s: %w", dir, err)
	}
	if len(t.paths) == 0 {
		if compressed > 0 {
			return nil, fmt.Errorf("kernel modules in %s are compressed (%d files): not supported", dir, compressed)
		}
		return nil, fmt.Errorf("no kernel modules (.ko) below %s/kernel", dir)
	}
	return t, nil
}

// ParseBuiltin parses modules.builtin ("kernel/path/name.ko" lines) into a set of names.
func ParseBuiltin(b []byte) map[string]bool {
	set := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" {
			continue
		}
		set[Normalize(strings.TrimSuffix(filepath.Base(l), ".ko"))] = true
	}
	return set
}

// Builtin reports whether module name is compiled into the kernel.
func (t *Tree) Builtin(name string) bool { return t.builtin[Normalize(name)] }

// Has reports whether name is a loadable module of this tree.
func (t *Tree) Has(name string) bool { _, ok := t.paths[Normalize(name)]; return ok }

// Info returns the metadata of module name.
func (t *Tree) Info(name string) (Info, error) {
	name = Normalize(name)
	t.mu.Lock()
	in, ok := t.infos[name]
	t.mu.Unlock()
	if ok {
		return in, nil
	}
	rel, ok := t.paths[name]
	if !ok {
		return Info{}, fmt.Errorf("module %s: %w", name, fs.ErrNotExist)
	}
	in, err := ReadInfo(filepath.Join(t.Dir, rel))
	if err != nil {
		return Info{}, err
	}
	in.Path = rel
	t.mu.Lock()
	t.infos[name] = in
	t.mu.Unlock()
	return in, nil
}

// ByAlias returns the modules declaring alias (exact match, no wildcards), sorted. The
// first call reads every module's metadata.
func (t *Tree) ByAlias(alias string) ([]string, error) {
	if err := t.indexAliases(); err != nil {
		return nil, err
	}
	t.mu.Lock()
	mods := append([]string(nil), t.aliases[alias]...)
	t.mu.Unlock()
	sort.Strings(mods)
	return mods, nil
}

func (t *Tree) indexAliases() error {
	t.mu.Lock()
	done := t.aliases != nil
	t.mu.Unlock()
	if done {
		return nil
	}
	names := make([]string, 0, len(t.paths))
	for n := range t.paths {
		names = append(names, n)
	}
	sort.Strings(names)
	work := make(chan string)
	errc := make(chan error, 1)
	var wg sync.WaitGroup
	for i := 0; i < runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				if _, err := t.Info(n); err != nil {
					select {
					case errc <- err:
					default:
					}
				}
			}
		}()
	}
	for _, n := range names {
		work <- n
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
	}
	idx := map[string][]string{}
	for _, n := range names {
		for _, a := range t.infos[n].Aliases {
			idx[a] = append(idx[a], n)
		}
	}
	t.mu.Lock()
	t.aliases = idx
	t.mu.Unlock()
	return nil
}

// Module is one entry of a load order.
type Module struct {
	Name string
	Path string // relative to the tree's directory
	// Optional modules were reached only through a soft dependency: loading them may
	// fail (e.g. a CPU-specific implementation on a CPU without the feature).
	Optional bool
}

// Resolution is the result of Resolve.
type Resolution struct {
	Load    []Module // in load order: every module after its dependencies
	Builtin []string // wanted modules (or dependencies) that are compiled in
}

// Resolve returns the modules to load, dependencies first, for the wanted module names.
// Wanted modules that are built into the kernel are listed in Builtin, not loaded. A
// wanted name that is neither a module nor built in is an error. Soft "pre:"
// dependencies are followed too (by name or alias; every module providing an alias is
// included, as optional, in name order); missing soft dependencies are ignored.
func (t *Tree) Resolve(wanted []string) (Resolution, error) {
	var res Resolution
	const (
		visiting = 1
		done     = 2
	)
	state := map[string]int{}
	builtinSeen := map[string]bool{}
	var visit func(name string, optional bool, chain []string) error
	visit = func(name string, optional bool, chain []string) error {
		name = Normalize(name)
		if t.Builtin(name) {
			if !builtinSeen[name] {
				builtinSeen[name] = true
				res.Builtin = append(res.Builtin, name)
			}
			return nil
		}
		switch state[name] {
		case done:
			if !optional {
				// A module first reached as optional is now required.
				for i := range res.Load {
					if res.Load[i].Name == name {
						res.Load[i].Optional = false
					}
				}
			}
			return nil
		case visiting:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		}
		in, err := t.Info(name)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				if len(chain) == 0 {
					return fmt.Errorf("module %s: neither a loadable module of %s nor built in", name, t.Release)
				}
				return fmt.Errorf("module %s (needed by %s): neither a loadable module of %s nor built in", name, strings.Join(chain, " -> "), t.Release)
			}
			return err
		}
		state[name] = visiting
		chain = append(chain, name)
		for _, sd := range in.SoftPre {
			cands, err := t.softCandidates(sd)
			if err != nil {
				return err
			}
			for _, c := range cands {
				if state[Normalize(c)] == visiting {
					continue
				}
				if err := visit(c, true, chain); err != nil {
					return err
				}
			}
		}
		for _, d := range in.Depends {
			if err := visit(d, optional, chain); err != nil {
				return err
			}
		}
		state[name] = done
		res.Load = append(res.Load, Module{Name: name, Path: in.Path, Optional: optional})
		return nil
	}
	for _, w := range wanted {
		if err := visit(w, false, nil); err != nil {
			return res, err
		}
	}
	return res, nil
}

// softCandidates resolves a softdep entry (a module name or an alias) to module names.
func (t *Tree) softCandidates(s string) ([]string, error) {
	if t.Builtin(s) || t.Has(s) {
		return []string{Normalize(s)}, nil
	}
	if t.builtinAliases[s] {
		return nil, nil // a built-in provides it
	}
	return t.ByAlias(s)
}

// parseBuiltinAliases reads the aliases of modules.builtin.modinfo ("mod.alias=x\0").
func parseBuiltinAliases(b []byte) map[string]bool {
	set := map[string]bool{}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := strings.Cut(string(kv), "=")
		if ok && strings.HasSuffix(k, ".alias") {
			set[v] = true
		}
	}
	return set
}
