// Package privdrop makes zeroclient give up root once it holds what needs root: its ports
// bound (443, 4172), its files opened (credential store, event logs, TLS key) and its admin
// socket made. What it does afterwards — serve clients, reach hostd's API socket as the
// broker group, dial WorkSpaces' VNC sockets as the display group, talk to LDAP and RADIUS
// — needs no privilege.
package privdrop

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Identity is who the process became.
type Identity struct {
	UID, GID int
	Groups   []int
}

// NoNewPrivs sets no_new_privs for the whole process: setuid binaries and file capabilities
// can then never grant it privileges again, whatever it execs. The flag is per thread and
// inherited only by threads created after it is set, and Go cannot set it on all threads
// when built with cgo; so NoNewPrivs sets it on this thread and re-executes the program,
// whose every thread then inherits it. Call it first thing: the process starts over (as
// root still: no_new_privs takes nothing away). It returns at once if the flag is set.
func NoNewPrivs() error {
	if on, err := noNewPrivs(); err != nil || on {
		return err
	}
	runtime.LockOSThread() // the flag is this thread's; exec from it
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	return fmt.Errorf("no_new_privs: re-exec %s: %w", exe, syscall.Exec(exe, os.Args, os.Environ()))
}

// noNewPrivs reports whether the process (its main thread) has no_new_privs set.
func noNewPrivs() (bool, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false, err
	}
	return strings.Contains(string(b), "\nNoNewPrivs:\t1\n"), nil
}

// To switches the whole process (every thread) to user name, its primary group and its
// supplementary groups, with no capabilities left and no way back: setuid from root to a
// non-root uid clears every capability set, and no_new_privs (NoNewPrivs, which must have
// run) stops setuid binaries and file capabilities from granting any again. It checks the
// switch took: uid 0 cannot be regained.
func To(name string) (Identity, error) {
	id, err := Lookup(name)
	if err != nil {
		return id, err
	}
	return id, Become(id)
}

// Lookup is who user name is: uid, primary group and supplementary groups, none of them
// root's.
func Lookup(name string) (Identity, error) {
	var id Identity
	u, err := user.Lookup(name)
	if err != nil {
		return id, fmt.Errorf("drop root: user %q: %w", name, err)
	}
	if id.UID, err = strconv.Atoi(u.Uid); err != nil {
		return id, fmt.Errorf("drop root: user %q: uid %q: %w", name, u.Uid, err)
	}
	if id.GID, err = strconv.Atoi(u.Gid); err != nil {
		return id, fmt.Errorf("drop root: user %q: gid %q: %w", name, u.Gid, err)
	}
	if id.UID == 0 || id.GID == 0 {
		return id, fmt.Errorf("drop root: user %q is root or in root's group", name)
	}
	gids, err := u.GroupIds()
	if err != nil {
		return id, fmt.Errorf("drop root: groups of %q: %w", name, err)
	}
	for _, g := range gids {
		n, err := strconv.Atoi(g)
		if err != nil {
			return id, fmt.Errorf("drop root: groups of %q: %q: %w", name, g, err)
		}
		if n == 0 {
			return id, fmt.Errorf("drop root: user %q is in root's group", name)
		}
		id.Groups = append(id.Groups, n)
	}
	return id, nil
}

// Become is To for an identity already looked up.
func Become(id Identity) error {
	// Go applies these to every thread of the process.
	if err := syscall.Setgroups(id.Groups); err != nil {
		return fmt.Errorf("drop root: setgroups: %w", err)
	}
	if err := syscall.Setresgid(id.GID, id.GID, id.GID); err != nil {
		return fmt.Errorf("drop root: setresgid %d: %w", id.GID, err)
	}
	if err := syscall.Setresuid(id.UID, id.UID, id.UID); err != nil {
		return fmt.Errorf("drop root: setresuid %d: %w", id.UID, err)
	}
	if on, err := noNewPrivs(); err != nil || !on {
		return fmt.Errorf("drop root: no_new_privs is not set (run NoNewPrivs first): %v", err)
	}
	if err := syscall.Setresuid(0, 0, 0); err == nil {
		return errors.New("drop root: uid 0 could be regained")
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var caps [2]unix.CapUserData
	if err := unix.Capget(&hdr, &caps[0]); err != nil {
		return fmt.Errorf("drop root: capabilities: %w", err)
	}
	for _, c := range caps {
		if c.Effective|c.Permitted|c.Inheritable != 0 {
			return fmt.Errorf("drop root: capabilities left: %+v", caps)
		}
	}
	return nil
}
