package main

import (
	"bufio"
	"os"
	"os/exec"
	"strings"

	"deskhost/hostd/agent"
)

// homeFormattedFile exists when this boot's user setup formatted the blank user volume.
const homeFormattedFile = "/run/deskhost/home-formatted"

// userFile is where the graphical image's user setup (deskhost-user.service) records the
// WorkSpace's user it created from the metadata service.
const userFile = "/run/deskhost/user"

// serviceMain runs the agent as a service of the image's init (systemd in the graphical
// image): the init mounted /proc, /sys, /dev; the root volume is "/", and the user setup
// mounted the user volume on /home before the agent starts. The agent only answers hostd.
func serviceMain() {
	g := &guest{log: newLogger(os.Stderr), phase: "starting", service: true}
	g.log.attachSerial(serialDev)
	g.log.Printf("starting as a service (agent %s)", Version)
	cmd := readCmdline()
	g.workspaceID, g.user = cmd.workspace, cmd.user
	for _, e := range cmd.errs {
		g.fail("%s", e)
	}
	g.hostname = "deskhost-desktop"
	if g.workspaceID != "" {
		g.hostname = g.workspaceID
	}
	g.refreshService()
	g.setPhase("waiting for the host channel")
	g.serve() // never returns
}

// refreshService reads what the init and the user setup did: whether /home is a mount,
// which user was created, the management address (eth0's first IPv4).
func (g *guest) refreshService() {
	home := isMountPoint("/proc/self/mountinfo", agent.HomeMount)
	user := ""
	if b, err := os.ReadFile(userFile); err == nil {
		user = strings.TrimSpace(string(b))
	}
	_, err := os.Stat(homeFormattedFile)
	formatted := err == nil
	addr := ""
	for _, i := range interfaces() {
		if i.Name == "eth0" {
			for _, a := range i.Addresses {
				if !strings.Contains(a, ":") {
					addr, _, _ = strings.Cut(a, "/")
					break
				}
			}
		}
	}
	g.mu.Lock()
	g.rootMounted, g.homeMounted, g.homeFormatted = true, home, formatted
	if user != "" {
		g.user = user
	}
	g.mgmtAddr = addr
	g.mu.Unlock()
}

// isMountPoint reports whether dir is a mount point in the mountinfo file.
func isMountPoint(mountinfo, dir string) bool {
	f, err := os.Open(mountinfo)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": field 5 is the mount point.
		fs := strings.Fields(sc.Text())
		if len(fs) >= 5 && fs[4] == dir {
			return true
		}
	}
	return false
}

// serviceShutdown asks the init to power off or reboot: it unmounts everything itself.
func (g *guest) serviceShutdown(reboot bool) {
	verb := "poweroff"
	if reboot {
		verb = "reboot"
	}
	g.setPhase(verb)
	g.log.Printf("shutdown: systemctl %s", verb)
	if out, err := exec.Command("systemctl", verb).CombinedOutput(); err != nil {
		g.fail("shutdown: systemctl %s: %v: %s", verb, err, strings.TrimSpace(string(out)))
	}
}
