// Package modload loads kernel modules from the image's module tree
// (/lib/modules/RELEASE with the index of internal/modindex): at boot, the modules the
// image lists for every boot plus those whose aliases match the hardware's modaliases
// (coldplug, repeated until no new device appears: loading virtio_pci makes the virtio
// devices appear); and afterwards on the kernel's request, as /sbin/modprobe.
package modload

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"deskhost/internal/imagelayout"
	"deskhost/internal/insmod"
	"deskhost/internal/modindex"
)

// Loader loads modules of one kernel release.
type Loader struct {
	Dir     string // /lib/modules/RELEASE
	Index   *modindex.Index
	builtin map[string]bool
	loaded  map[string]bool
	// Log reports each module loaded or failed (optional).
	Log func(format string, args ...any)
}

// Open reads the index of the running kernel's modules below root (normally
// imagelayout.ModulesRoot).
func Open(root string) (*Loader, error) {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return nil, err
	}
	release := unix.ByteSliceToString(u.Release[:])
	dir := filepath.Join(root, release)
	ix, err := modindex.ReadAll(func(n string) (io.ReadCloser, error) { return os.Open(filepath.Join(dir, n)) })
	if err != nil {
		return nil, fmt.Errorf("kernel modules of %s: %w", release, err)
	}
	l := &Loader{Dir: dir, Index: ix, builtin: map[string]bool{}, loaded: map[string]bool{}}
	if b, err := os.ReadFile(filepath.Join(dir, "modules.builtin")); err == nil {
		for _, line := range strings.Fields(string(b)) {
			l.builtin[modindex.Normalize(strings.TrimSuffix(filepath.Base(line), ".ko"))] = true
		}
	}
	l.refreshLoaded()
	return l, nil
}

func (l *Loader) logf(format string, args ...any) {
	if l.Log != nil {
		l.Log(format, args...)
	}
}

func (l *Loader) refreshLoaded() {
	b, err := os.ReadFile("/proc/modules")
	if err != nil {
		return
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			l.loaded[f[0]] = true
		}
	}
}

// Load loads module name (a name, not an alias) and what it depends on. A module that
// is loaded or built in already counts as loaded.
func (l *Loader) Load(name string) error {
	name = modindex.Normalize(name)
	if l.builtin[name] || l.loaded[name] {
		return nil
	}
	if _, ok := l.Index.Modules[name]; !ok {
		return fmt.Errorf("module %s: not in the image", name)
	}
	order := l.Index.LoadOrder(name)
	var errs []error
	for _, n := range order {
		if l.loaded[n] || l.builtin[n] {
			continue
		}
		m := l.Index.Modules[n]
		err := insmod.Insert(filepath.Join(l.Dir, m.Path))
		if err != nil {
			// Soft dependencies (CPU-specific implementations) may refuse to load.
			if n != name && !l.hardDep(name, n) {
				l.logf("optional module %s not loaded: %v", n, err)
				continue
			}
			errs = append(errs, fmt.Errorf("module %s: %w", n, err))
			break
		}
		l.loaded[n] = true
		l.logf("loaded %s", n)
	}
	return errors.Join(errs...)
}

// hardDep reports whether dep is a (transitive) hard dependency of name.
func (l *Loader) hardDep(name, dep string) bool {
	seen := map[string]bool{}
	var walk func(n string) bool
	walk = func(n string) bool {
		if seen[n] {
			return false
		}
		seen[n] = true
		m, ok := l.Index.Modules[n]
		if !ok {
			return false
		}
		for _, d := range m.Depends {
			if d == dep || walk(d) {
				return true
			}
		}
		return false
	}
	return walk(name)
}

// Probe loads what a modprobe request for s means (a name or an alias): every module
// that provides it. It fails only if none loads.
func (l *Loader) Probe(s string) error {
	mods := l.Index.Resolve(s)
	if len(mods) == 0 {
		if l.builtin[modindex.Normalize(s)] {
			return nil
		}
		return fmt.Errorf("%s: no module in the image provides it", s)
	}
	var errs []error
	ok := 0
	for _, m := range mods {
		if err := l.Load(m); err != nil {
			errs = append(errs, err)
			continue
		}
		ok++
	}
	if ok == 0 {
		return errors.Join(errs...)
	}
	return nil
}

// Report is what Coldplug did.
type Report struct {
	Loaded []string // modules loaded
	Failed []string // "name: error"
	Rounds int
}

// Coldplug loads the image's boot list, then modules matching the hardware, in rounds
// until no new module loads (a bus driver makes new devices appear).
func (l *Loader) Coldplug(sysfs string) Report {
	var r Report
	before := map[string]bool{}
	for n := range l.loaded {
		before[n] = true
	}
	failed := map[string]bool{}
	try := func(n string) {
		if l.loaded[n] || failed[n] {
			return
		}
		if err := l.Load(n); err != nil {
			failed[n] = true
			r.Failed = append(r.Failed, err.Error())
		}
	}
	for _, n := range l.Index.Load {
		try(n)
	}
	seen := map[string]bool{}
	for r.Rounds = 1; r.Rounds <= 8; r.Rounds++ {
		aliases := Modaliases(sysfs)
		var todo []string
		for _, a := range aliases {
			if seen[a] {
				continue
			}
			seen[a] = true
			todo = append(todo, l.Index.Resolve(a)...)
		}
		if len(todo) == 0 {
			break
		}
		sort.Strings(todo)
		n := len(l.loaded)
		for _, m := range todo {
			try(m)
		}
		if len(l.loaded) == n {
			break
		}
	}
	for n := range l.loaded {
		if !before[n] {
			r.Loaded = append(r.Loaded, n)
		}
	}
	sort.Strings(r.Loaded)
	return r
}

// Modaliases lists the modalias of every device below sysfs/devices (and the CPU's).
func Modaliases(sysfs string) []string {
	var out []string
	seen := map[string]bool{}
	_ = filepath.WalkDir(filepath.Join(sysfs, "devices"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 && d.IsDir() {
			return filepath.SkipDir
		}
		if d.Name() != "modalias" || d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return nil
		}
		a := strings.TrimSpace(string(b))
		if a != "" && !seen[a] {
			seen[a] = true
			out = append(out, a)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// ModprobeMain is init's behaviour as /sbin/modprobe, which the kernel runs as
// "modprobe -q -- NAME" to load a module on demand (a file system, a netfilter
// expression, a network family). Other options of modprobe are accepted and ignored.
func ModprobeMain(args []string) int {
	quiet := false
	var names []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--":
			names = append(names, args[i+1:]...)
			i = len(args)
		case a == "-q" || a == "--quiet":
			quiet = true
		case strings.HasPrefix(a, "-"):
		default:
			names = append(names, a)
		}
	}
	if len(names) == 0 {
		fmt.Fprintln(os.Stderr, "usage: modprobe [-q] [--] MODULE|ALIAS")
		return 1
	}
	l, err := Open(imagelayout.ModulesRoot)
	if err != nil {
		if !quiet {
			fmt.Fprintln(os.Stderr, "modprobe:", err)
		}
		return 1
	}
	// The kernel passes one name; modprobe NAME ARGS... would pass parameters.
	if err := l.Probe(names[0]); err != nil {
		if !quiet {
			fmt.Fprintln(os.Stderr, "modprobe:", err)
		}
		return 1
	}
	return 0
}
