// Package mounts sets up the file systems init needs before anything else runs (proc,
// sysfs, devtmpfs, devpts, tmpfs on /run and /tmp, cgroup2), and takes everything down
// again at shutdown.
package mounts

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount is one mount of the early table.
type Mount struct {
	Source, Target, FSType string
	Flags                  uintptr
	Data                   string
	Mode                   os.FileMode // of Target, created if missing
}

// Early is the table init mounts first, in order.
var Early = []Mount{
	{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "", 0o555},
	{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755", 0o755},
	{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "gid=5,mode=0620,ptmxmode=0666", 0o755},
	{"tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777", 0o1777},
	{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755,size=20%", 0o755},
	{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777,size=20%", 0o1777},
	{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "nsdelegate", 0o755},
}

// MountEarly mounts the Early table. A mount point already mounted (the kernel may mount
// devtmpfs itself) is left as it is.
func MountEarly() error {
	var errs []error
	for _, m := range Early {
		if err := os.MkdirAll(m.Target, m.Mode.Perm()); err != nil {
			errs = append(errs, fmt.Errorf("mkdir %s: %w", m.Target, err))
			continue
		}
		err := unix.Mount(m.Source, m.Target, m.FSType, m.Flags, m.Data)
		if errors.Is(err, unix.EBUSY) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("mount %s on %s: %w", m.FSType, m.Target, err))
		}
	}
	// The conventional links into /proc.
	for link, target := range map[string]string{"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0",
		"/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2", "/dev/core": "/proc/kcore"} {
		_ = os.Symlink(target, link)
	}
	return errors.Join(errs...)
}

// Bind bind-mounts src on target, creating both directories.
func Bind(src, target string) error {
	if err := os.MkdirAll(src, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind %s on %s: %w", src, target, err)
	}
	return nil
}

// Entry is a line of /proc/self/mountinfo.
type Entry struct {
	Target, FSType, Source string
}

// List reads /proc/self/mountinfo.
func List() ([]Entry, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Entry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root target options [optional...] - fstype source superopts
		l := sc.Text()
		pre, post, ok := strings.Cut(l, " - ")
		if !ok {
			continue
		}
		a, b := strings.Fields(pre), strings.Fields(post)
		if len(a) < 5 || len(b) < 2 {
			continue
		}
		out = append(out, Entry{Target: unescape(a[4]), FSType: b[0], Source: unescape(b[1])})
	}
	return out, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v int
			if _, err := fmt.Sscanf(s[i+1:i+4], "%o", &v); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Mounted reports whether target is a mount point.
func Mounted(target string) bool {
	l, err := List()
	if err != nil {
		return false
	}
	for _, e := range l {
		if e.Target == target {
			return true
		}
	}
	return false
}

// UnmountAll unmounts everything but the root and the kernel's pseudo file systems,
// deepest first; what stays busy is remounted read-only so its data is safe. It returns
// what it could not unmount.
func UnmountAll() []string {
	l, err := List()
	if err != nil {
		return []string{err.Error()}
	}
	sort.Slice(l, func(i, j int) bool { return len(l[i].Target) > len(l[j].Target) })
	var failed []string
	keep := map[string]bool{"/": true, "/proc": true, "/sys": true, "/dev": true}
	for _, e := range l {
		if keep[e.Target] {
			continue
		}
		if err := unix.Unmount(e.Target, 0); err != nil {
			if rerr := unix.Mount("", e.Target, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); rerr != nil {
				failed = append(failed, fmt.Sprintf("%s: %v (read-only remount: %v)", e.Target, err, rerr))
			} else {
				_ = unix.Unmount(e.Target, unix.MNT_DETACH)
			}
		}
	}
	return failed
}
