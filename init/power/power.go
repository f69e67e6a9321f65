// Package power ends the system cleanly once init has stopped its services: every
// remaining process gets SIGTERM, then SIGKILL; file systems are synced and unmounted
// (or remounted read-only); then the kernel reboots, halts or powers off.
package power

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/init/mounts"
)

// Action is what happens at the end.
type Action int

const (
	Reboot Action = iota
	PowerOff
	Halt
)

func (a Action) String() string {
	return [...]string{"reboot", "power off", "halt"}[a]
}

// KillAll signals every process but init, waits up to grace for them to go, then kills
// what is left. Reaping happens in init's reaper; here we only watch /proc.
func KillAll(grace time.Duration, log func(string, ...any)) {
	_ = unix.Kill(-1, unix.SIGTERM)
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		if len(Others()) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	if left := Others(); len(left) > 0 {
		log("killing %d processes that did not stop: %s", len(left), strings.Join(left, ", "))
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	deadline = time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) && len(Others()) > 0 {
		time.Sleep(50 * time.Millisecond)
	}
}

// Others lists user-space processes other than init ("pid name"), skipping kernel
// threads and zombies.
func Others() []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	self := os.Getpid()
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		j := strings.IndexByte(s, '(')
		if i < 0 || j < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// Kernel threads are children of kthreadd (2) or are kthreadd; zombies are Z.
		if len(f) < 2 || f[0] == "Z" || f[1] == "2" || pid == 2 {
			continue
		}
		out = append(out, fmt.Sprintf("%d %s", pid, s[j+1:i]))
	}
	return out
}

// Finish syncs, unmounts and performs a. It does not return unless the reboot call
// fails.
func Finish(a Action, log func(string, ...any)) error {
	unix.Sync()
	if failed := mounts.UnmountAll(); len(failed) > 0 {
		log("could not unmount: %s", strings.Join(failed, "; "))
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_RESTART
	switch a {
	case PowerOff:
		cmd = unix.LINUX_REBOOT_CMD_POWER_OFF
	case Halt:
		cmd = unix.LINUX_REBOOT_CMD_HALT
	}
	return unix.Reboot(cmd)
}
