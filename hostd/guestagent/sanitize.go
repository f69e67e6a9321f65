package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// The guide's Linux image sanitising (guide catalog §4.3): what is removed from the root
// volume before it becomes an image, and what is shredded. Paths are relative to the root
// volume. "Emptied" directories keep their entry (and mode): a running system expects
// /tmp or /var/cache to exist.
var (
	sanitizeEmpty = []string{
		"tmp", "var/tmp", "var/spool/mail", "var/lib/dhcp", "var/lib/cloud", "var/cache",
		"var/backups", "etc/sudoers.d", "var/log/amazon/ssm", "var/log/pcoip-agent",
		"var/log/skylight", "home", "var/log/journal",
	}
	sanitizeRemove = []string{
		"etc/udev/rules.d/70-persistent-net.rules", "etc/network/interfaces.d/50-cloud-init.cfg",
		"etc/security/access.conf", "var/lock/.skylight.domain-join.lock",
		"var/lib/skylight/domain-join-status", "var/lib/skylight/configuration-data",
		"var/lib/skylight/config-data.json", "var/lib/dbus/machine-id",
	}
	// Shredded: overwritten with zeros and synced before they are removed.
	sanitizeShred = []string{
		"etc/ssh/ssh_host_*_key", "etc/ssh/ssh_host_*_key.pub", "var/lib/skylight/tls.*",
		"var/lib/skylight/private.key", "var/lib/skylight/public.key",
	}
	// Truncated to empty: the machine's identity (systemd makes a new one at first boot)
	// and every log file left under var/log.
	sanitizeTruncate = []string{"etc/machine-id"}
	// Shell histories of root and of any account whose home is on the root volume.
	sanitizeHistories = []string{"root/.*_history", "root/.lesshst", "root/.viminfo"}
)

// rootUsage is the root volume's use as df shows it: used / (used + available to users).
func rootUsage(dir string) (float64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	used := st.Blocks - st.Bfree
	if used+st.Bavail == 0 {
		return 0, fmt.Errorf("statfs %s: no blocks", dir)
	}
	return 100 * float64(used) / float64(used+st.Bavail), nil
}

// rootDir is where the root volume is mounted for this agent.
func (g *guest) rootDir() string {
	if g.service {
		return g.fsPrefix + "/"
	}
	return g.fsPrefix + agent.RootMount
}

// sanitize runs the guide's Linux sanitising steps on the root volume, after refusing a
// volume agent.MaxImageRootPercent or more full (nothing is touched then). It answers
// the volume's use and what it removed, shredded or truncated (relative paths).
func (g *guest) sanitize() (float64, []string, error) {
	g.mu.Lock()
	mounted := g.rootMounted
	g.mu.Unlock()
	if !mounted {
		return 0, nil, errors.New("sanitize: the root volume is not mounted")
	}
	dir := g.rootDir()
	pct, err := rootUsage(dir)
	if err != nil {
		return 0, nil, err
	}
	if pct >= agent.MaxImageRootPercent {
		return pct, nil, fmt.Errorf("sanitize: the root volume is %.1f%% full; an image needs it less than %d%% full", pct, agent.MaxImageRootPercent)
	}
	r, err := os.OpenRoot(dir)
	if err != nil {
		return pct, nil, err
	}
	defer r.Close()
	var done []string
	var errs []error
	note := func(what, p string, err error) {
		switch {
		case err == nil:
			done = append(done, what+" "+p)
		case !errors.Is(err, fs.ErrNotExist):
			errs = append(errs, fmt.Errorf("%s %s: %w", what, p, err))
		}
	}
	for _, p := range sanitizeEmpty {
		n, err := emptyDir(r, p)
		if err == nil && n == 0 {
			continue
		}
		note("emptied", p, err)
	}
	for _, p := range sanitizeRemove {
		note("removed", p, removeFile(r, p))
	}
	for _, pat := range sanitizeShred {
		for _, p := range glob(r, pat) {
			note("shredded", p, shred(r, p))
		}
	}
	for _, p := range sanitizeTruncate {
		note("truncated", p, truncate(r, p))
	}
	// Logs: kept as empty files, so that services find them with their owners and modes.
	_ = fs.WalkDir(r.FS(), "var/log", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		if fi, err := d.Info(); err == nil && fi.Size() == 0 {
			return nil
		}
		if rotated(p) {
			note("removed", p, r.Remove(p))
		} else {
			note("truncated", p, truncate(r, p))
		}
		return nil
	})
	// Histories hold what was typed (passwords on command lines): shredded, not only
	// removed, so that the image's free blocks do not keep them.
	for _, pat := range sanitizeHistories {
		for _, p := range glob(r, pat) {
			note("shredded", p, shred(r, p))
		}
	}
	unix.Sync()
	return pct, done, errors.Join(errs...)
}

// rotated reports whether a log file name is an old rotation (syslog.1, syslog.2.gz).
func rotated(p string) bool {
	b := path.Base(p)
	for _, s := range []string{".gz", ".xz", ".bz2", ".old"} {
		if strings.HasSuffix(b, s) {
			return true
		}
	}
	i := strings.LastIndexByte(b, '.')
	if i < 0 || i == len(b)-1 {
		return false
	}
	for _, c := range b[i+1:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// emptyDir removes what a directory holds and answers how many entries it removed.
func emptyDir(r *os.Root, p string) (int, error) {
	fi, err := r.Lstat(p)
	if err != nil {
		return 0, err
	}
	if !fi.IsDir() {
		return 1, r.RemoveAll(p)
	}
	d, err := r.Open(p)
	if err != nil {
		return 0, err
	}
	names, err := d.Readdirnames(-1)
	d.Close()
	if err != nil {
		return 0, err
	}
	for _, n := range names {
		if err := r.RemoveAll(p + "/" + n); err != nil {
			return 0, err
		}
	}
	return len(names), nil
}

// removeFile removes a file or a symbolic link (never what it points to).
func removeFile(r *os.Root, p string) error {
	fi, err := r.Lstat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return r.RemoveAll(p)
	}
	return r.Remove(p)
}

// glob matches a pattern whose last element only has wildcards.
func glob(r *os.Root, pat string) []string {
	dir, base := path.Split(pat)
	dir = strings.TrimSuffix(dir, "/")
	d, err := r.Open(dir)
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	slices.Sort(names)
	var out []string
	for _, n := range names {
		if ok, _ := path.Match(base, n); ok {
			out = append(out, dir+"/"+n)
		}
	}
	return out
}

// shred overwrites a regular file with zeros, syncs it, then removes it. A symbolic link
// is only removed.
func shred(r *os.Root, p string) error {
	fi, err := r.Lstat(p)
	if err != nil {
		return err
	}
	if fi.Mode().IsRegular() {
		f, err := r.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return err
		}
		if err := zeroFill(f, fi.Size()); err != nil {
			f.Close()
			return err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
		f.Close()
	}
	return r.Remove(p)
}

// truncate empties a regular file in place (its owner and mode kept), after overwriting
// it with zeros: a log's lines must not stay behind in the blocks it frees.
func truncate(r *os.Root, p string) error {
	fi, err := r.Lstat(p)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return r.Remove(p)
	}
	if fi.Size() == 0 {
		return fs.ErrNotExist // nothing to do: not reported
	}
	f, err := r.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	err = zeroFill(f, fi.Size())
	if err == nil {
		err = f.Truncate(0)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// zeroFill overwrites the first size bytes of f with zeros and syncs them.
func zeroFill(f *os.File, size int64) error {
	zero := make([]byte, 64<<10)
	for left := size; left > 0; left -= int64(len(zero)) {
		if _, err := f.Write(zero[:min(left, int64(len(zero)))]); err != nil {
			return err
		}
	}
	return f.Sync()
}
