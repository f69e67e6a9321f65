// Command init is deskhost's PID 1. It brings the host up from the appliance image's
// initramfs, supervises its services, runs the operator console, and shuts the host down
// cleanly. The boot, step by step (each step prints a line on the consoles; a failing
// step raises an alarm and the boot goes on, so the operator console always comes up):
//
//  1. Mounts: /proc, /sys, /dev (devtmpfs) with /dev/pts and /dev/shm, tmpfs on /run and
//     /tmp, cgroup2; the loopback interface up; Ctrl-Alt-Del becomes SIGINT (reboot).
//  2. Reaping: every orphan that exits below PID 1 is reaped (internal/reaper); init's
//     own children are waited for through the same loop (init/proc).
//  3. Kernel modules from the image's module tree: the boot list, then drivers matching
//     the hardware's modaliases until no new device appears (init/modload). From then
//     on the kernel's module requests run init as /sbin/modprobe.
//  4. Entropy: the kernel's RNG is checked; once /perm is up, the saved seed is mixed in
//     and replaced (init/entropy).
//  5. /perm: the partition named deskhost-perm (or deskhost.perm=DEVICE) is formatted
//     (ext4) only if blank, then mounted; without one, /perm is a tmpfs and the console
//     says so (init/perm). Service logs go to /perm/log; libvirt's state to
//     /perm/libvirt.
//  6. Host config: deskhost.config= on the kernel command line (a path, or an https://,
//     http:// or tftp:// URL fetched over a DHCP bootstrap network and verified by the
//     command line's deskhost.config.ca= or deskhost.config.sha256=), else the config
//     baked into the image, else /perm/deskhost.yaml, else init's defaults (init/hostcfg).
//     It is checked strictly (hostd's and init's sections).
//  7. NIC roles, once per boot (init/nicroles): pins (per-host overrides keyed by the
//     hardware identity, internal/hwid; the config's name or mac), else management is the
//     NIC the host network-booted from (BOOTIF=), else the first NIC with carrier to get a
//     DHCP lease; primary is another NIC. They are written into the config the services
//     read (/run/deskhost/host.yaml), so init and hostd never disagree.
//  8. Host name (per-host overrides, init.hostname, else one made from the management
//     NIC's MAC) and /etc/resolv.conf from the config's init section.
//  9. Network: netcfg applied once (`netcfg apply`) with the config's init.network
//     section and the console's management-address override from /perm. init writes the
//     kernel's network only here and in steps 6 and 7, before any service starts; then
//     hostd (or netcfg's service when hostd is disabled) is its one writer.
//  10. Time: the clock is set from NTP (init/sntp) before the broker starts.
//  11. Services, started in order and supervised with restart backoff, each with its own
//     log (ring buffer + /perm/log/NAME.log): netcfg (apply --serve), virtlogd, libvirtd,
//     hostd, zeroclient (when the image carries it) (init/supervisor).
//  12. The operator console on every configured terminal (init/console). When hostd and
//     zeroclient serve, its header reads "deskhost: ready". Looking is free; changing the
//     host needs the console password.
//
// Shutdown (console, SIGTERM/SIGINT = reboot, SIGUSR1 = halt, SIGUSR2 = power off, as
// busybox's reboot/halt/poweroff send): services stopped in reverse order, a fresh
// entropy seed saved, every other process terminated then killed, file systems synced
// and unmounted, then reboot or power off. A factory reset also wipes /perm's signature
// so the next boot formats it.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"deskhost/init/modload"
)

func main() {
	// The kernel runs /sbin/modprobe (a link to /init) to load modules on demand.
	if filepath.Base(os.Args[0]) == "modprobe" {
		os.Exit(modload.ModprobeMain(os.Args[1:]))
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: deskhost's init runs only as PID 1, from the appliance image (imagebuild build)")
		os.Exit(2)
	}
	boot()
}
