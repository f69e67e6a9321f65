// Package confine keeps a WorkSpace's qemu to itself: the unprivileged user it runs as, the
// files hostd hands to that user while the guest runs, and whether the host can put it under
// per-WorkSpace cgroup limits.
//
// qemu runs as an unprivileged user (libvirt-qemu) through libvirt's DAC driver with a
// static label and relabelling off (see hostd/virt). libvirt's dynamic ownership would chown
// every file a domain reads to that user while it runs, the shared ones included: the image's
// kernel, initrd and base disk. Then any one compromised qemu could rewrite what every other
// WorkSpace boots. So hostd hands over only what is the WorkSpace's own — its two volumes and
// its runtime directory — and takes the volumes back when the guest is gone. Shared image
// files stay root's and need only be readable.
//
// Access that must keep working:
//   - guest RAM: hostd (root) opens qemu's memfd through /proc/<pid>/fd; root may, whatever
//     user qemu runs as (hostd/memscrub).
//   - the display: qemu creates the VNC socket in the runtime directory; hostd then gives it
//     to the display group (zeroclient's gateway) with mode 0660, and the directory is
//     0750 qemu:display group. The agent socket next to it is made by libvirt as root
//     (0775), so members of the display group can see it but not connect to it.
package confine

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Policy is how WorkSpaces' qemu processes run.
type Policy struct {
	// UID and GID run qemu. Zero for both means qemu runs as root (libvirt's qemu.conf
	// decides): nothing is handed over.
	UID, GID int
	// DisplayGID may connect to WorkSpaces' VNC sockets; -1: only root may.
	DisplayGID int
	// Limits puts each WorkSpace under cgroup limits (hostd/virt: cpu.max, memory.max).
	Limits bool
}

// Root is the policy of qemu run as root, with no limits (development setups only).
var Root = Policy{DisplayGID: -1}

// Lookup resolves the user and groups of a policy by name. group "" is the user's primary
// group; displayGroup "" lets only root reach the display.
func Lookup(userName, group, displayGroup string, limits bool) (Policy, error) {
	p := Policy{DisplayGID: -1, Limits: limits}
	u, err := user.Lookup(userName)
	if err != nil {
		return p, fmt.Errorf("qemu user %q: %w", userName, err)
	}
	if p.UID, err = strconv.Atoi(u.Uid); err != nil {
		return p, fmt.Errorf("qemu user %q: uid %q: %w", userName, u.Uid, err)
	}
	gid := u.Gid
	if group != "" {
		g, err := user.LookupGroup(group)
		if err != nil {
			return p, fmt.Errorf("qemu group %q: %w", group, err)
		}
		gid = g.Gid
	}
	if p.GID, err = strconv.Atoi(gid); err != nil {
		return p, fmt.Errorf("qemu group %q: gid %q: %w", group, gid, err)
	}
	if displayGroup != "" {
		g, err := user.LookupGroup(displayGroup)
		if err != nil {
			return p, fmt.Errorf("display group %q: %w", displayGroup, err)
		}
		if p.DisplayGID, err = strconv.Atoi(g.Gid); err != nil {
			return p, fmt.Errorf("display group %q: gid %q: %w", displayGroup, g.Gid, err)
		}
	}
	if p.UID == 0 {
		return p, fmt.Errorf("qemu user %q is root: WorkSpaces must not run as root", userName)
	}
	return p, nil
}

// Unprivileged reports whether qemu runs as a user other than root.
func (p Policy) Unprivileged() bool { return p.UID != 0 || p.GID != 0 }

// Label is the libvirt DAC label qemu runs with ("+uid:+gid"), or "" for libvirt's default.
func (p Policy) Label() string {
	if !p.Unprivileged() {
		return ""
	}
	return fmt.Sprintf("+%d:+%d", p.UID, p.GID)
}

// Prepare hands a WorkSpace's own files to qemu before it starts: the volumes become
// qemu's (mode 0600), the runtime directory qemu's with the display group (0750). It
// checks that qemu can reach them, and can read the shared files without owning them.
func (p Policy) Prepare(runDir string, volumes, shared []string) error {
	if !p.Unprivileged() {
		return nil
	}
	group, mode := p.GID, os.FileMode(0o700)
	if p.DisplayGID >= 0 {
		group, mode = p.DisplayGID, 0o750
	}
	if err := os.Chown(runDir, p.UID, group); err != nil {
		return fmt.Errorf("hand runtime directory to qemu: %w", err)
	}
	if err := os.Chmod(runDir, mode); err != nil {
		return fmt.Errorf("hand runtime directory to qemu: %w", err)
	}
	for _, v := range volumes {
		if err := os.Chown(v, p.UID, p.GID); err != nil {
			return fmt.Errorf("hand volume to qemu: %w", err)
		}
		if err := os.Chmod(v, 0o600); err != nil {
			return fmt.Errorf("hand volume to qemu: %w", err)
		}
	}
	for _, path := range append([]string{runDir}, volumes...) {
		if err := p.reachable(filepath.Dir(path)); err != nil {
			return err
		}
	}
	for _, s := range shared {
		if err := p.readable(s); err != nil {
			return err
		}
	}
	return nil
}

// Reclaim takes a WorkSpace's volumes back from qemu once its guest is gone, so that no
// other qemu running as the same user can open them. Missing volumes are not an error.
func (p Policy) Reclaim(volumes []string) error {
	if !p.Unprivileged() {
		return nil
	}
	var errs []error
	for _, v := range volumes {
		if err := os.Chown(v, 0, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("take volume back from qemu: %w", err))
		}
	}
	return errors.Join(errs...)
}

// OpenDisplay lets the display group connect to the VNC socket qemu made.
func (p Policy) OpenDisplay(socket string) error {
	if p.DisplayGID < 0 {
		return nil
	}
	fi, err := os.Lstat(socket)
	if err != nil {
		return fmt.Errorf("display socket: %w", err)
	}
	if fi.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("display socket %s is not a socket (%s)", socket, fi.Mode())
	}
	if err := os.Lchown(socket, -1, p.DisplayGID); err != nil {
		return fmt.Errorf("display socket: %w", err)
	}
	if err := os.Chmod(socket, 0o660); err != nil {
		return fmt.Errorf("display socket: %w", err)
	}
	return nil
}

// reachable checks that qemu's user can search every directory from / down to dir.
func (p Policy) reachable(dir string) error {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	for d := dir; ; d = filepath.Dir(d) {
		var st unix.Stat_t
		if err := unix.Stat(d, &st); err != nil {
			return fmt.Errorf("qemu's path to %s: %w", dir, err)
		}
		if !p.may(st, 0o1) {
			return fmt.Errorf("qemu (uid %d) cannot reach %s: %s is mode %o, owner %d:%d; give others (or qemu) search permission",
				p.UID, dir, d, st.Mode&0o7777, st.Uid, st.Gid)
		}
		if d == "/" {
			return nil
		}
	}
}

// readable checks that qemu's user can read a shared file it must not own or write.
func (p Policy) readable(path string) error {
	if err := p.reachable(filepath.Dir(path)); err != nil {
		return err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return fmt.Errorf("shared image file: %w", err)
	}
	if !p.may(st, 0o4) {
		return fmt.Errorf("qemu (uid %d) cannot read %s (mode %o, owner %d:%d): image files must be readable by others",
			p.UID, path, st.Mode&0o7777, st.Uid, st.Gid)
	}
	if int(st.Uid) == p.UID || p.may(st, 0o2) {
		return fmt.Errorf("qemu (uid %d) may write the shared image file %s (mode %o, owner %d:%d): one WorkSpace could change what all of them boot",
			p.UID, path, st.Mode&0o7777, st.Uid, st.Gid)
	}
	return nil
}

// may reports whether qemu's user has permission bit (1 search, 2 write, 4 read) on a file.
func (p Policy) may(st unix.Stat_t, bit uint32) bool {
	switch {
	case int(st.Uid) == p.UID:
		return st.Mode&(bit<<6) != 0
	case int(st.Gid) == p.GID:
		return st.Mode&(bit<<3) != 0
	}
	return st.Mode&bit != 0
}

// cgroupRoot is where cgroup v2 is mounted; tests point it elsewhere.
var cgroupRoot = "/sys/fs/cgroup"

// CheckLimits says whether libvirt can put WorkSpaces under cgroup v2 limits on this host:
// /sys/fs/cgroup must be cgroup2 with the cpu and memory controllers. Without systemd
// libvirt creates /sys/fs/cgroup/machine itself and enables the controllers it needs.
func CheckLimits() error {
	var fs unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &fs); err != nil {
		return fmt.Errorf("per-WorkSpace limits need cgroup v2: %w", err)
	}
	if fs.Type != unix.CGROUP2_SUPER_MAGIC {
		return fmt.Errorf("per-WorkSpace limits need cgroup v2 at %s; it holds cgroup v1 hierarchies (or a tmpfs of them), whose controllers cgroup v2 cannot use", cgroupRoot)
	}
	b, err := os.ReadFile(filepath.Join(cgroupRoot, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("per-WorkSpace limits: %w", err)
	}
	have := strings.Fields(string(b))
	var missing []string
	for _, c := range []string{"cpu", "memory"} {
		found := false
		for _, h := range have {
			found = found || h == c
		}
		if !found {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("per-WorkSpace limits need the cgroup v2 controllers %s; %s offers %q", strings.Join(missing, " and "), cgroupRoot, have)
	}
	// libvirt raises qemu's RLIMIT_MEMLOCK to the memory limit before it starts it, which
	// takes CAP_SYS_RESOURCE (containers often drop it from the bounding set).
	var hdr = unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("per-WorkSpace limits: capabilities: %w", err)
	}
	if data[unix.CAP_SYS_RESOURCE/32].Effective&(1<<(unix.CAP_SYS_RESOURCE%32)) == 0 {
		return errors.New("per-WorkSpace limits need CAP_SYS_RESOURCE (libvirt raises qemu's locked-memory limit to its memory limit); this process lacks it")
	}
	return nil
}
