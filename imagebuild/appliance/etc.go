package appliance

import (
	"fmt"
	"io/fs"

	"deskhost/imagebuild/initramfs"
	"deskhost/internal/virtlogconf"
)

// The image's static files below /etc. init writes what depends on the host config
// (hostname, resolv.conf) at boot.

// User and group databases (glibc's NSS reads files only). qemu runs as libvirt-qemu
// (qemu.conf below; hostd's guests.user). zeroclient drops root to zeroclient once it has
// bound its ports; its group may use hostd's socket as the broker (hostd.api.brokerGroup)
// and connect to the WorkSpaces' displays (hostd.guests.displayGroup).
const passwd = `root:x:0:0:root:/root:/bin/sh
libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin
zeroclient:x:64060:64060:deskhost zeroclient:/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
`

const group = `root:x:0:
kvm:x:104:libvirt-qemu
libvirt:x:105:
libvirt-qemu:x:64055:
zeroclient:x:64060:
nogroup:x:65534:
`

const nsswitch = `passwd: files
group:  files
shadow: files
hosts:  files dns
`

const hosts = `127.0.0.1 localhost
::1       localhost
`

// The operator shell's environment (busybox ash reads /etc/profile for login shells;
// init starts the shell with ENV pointing here too).
const shProfile = `export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PS1='\h:\w# '
export LIBVIRT_DEFAULT_URI=qemu:///system
`

// libvirt's configuration on the appliance. init runs the daemons at their normal paths
// (/run/libvirt, /var/lib/libvirt on /perm) and captures their stderr into the service
// logs, so both log to stderr.
const libvirtdConf = `# deskhost appliance (imagebuild)
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:stderr"
`

var virtlogdConf = `# deskhost appliance (imagebuild)
log_outputs = "3:stderr"
` + virtlogconf.Settings()

// qemu runs unprivileged as libvirt-qemu. hostd's domains carry a static DAC label with
// relabelling off, and hostd hands each WorkSpace's own files to that user itself
// (hostd/confine): libvirt's dynamic ownership would also chown the shared image files.
// cgroup v2 (init mounts it at /sys/fs/cgroup): libvirt, without systemd, makes a cgroup
// per domain under /sys/fs/cgroup/machine with the cpu and memory controllers, where
// hostd's limits (cpu.max, memory.max) apply. Guest memory never goes into core dumps.
const qemuConf = `# deskhost appliance (imagebuild)
user = "libvirt-qemu"
group = "libvirt-qemu"
dynamic_ownership = 1
cgroup_controllers = [ "cpu", "memory" ]
dump_guest_core = 0
security_driver = "none"
`

func osRelease(name, version string) string {
	return fmt.Sprintf(`NAME="deskhost"
ID=deskhost
PRETTY_NAME="deskhost %s %s"
VERSION_ID=%q
HOME_URL="https://github.com/deskhost"
`, name, version, version)
}

func writeEtc(a *initramfs.Archive, name, version string) error {
	files := []struct {
		path string
		data string
		perm fs.FileMode
	}{
		{"/etc/passwd", passwd, 0o644},
		{"/etc/group", group, 0o644},
		{"/etc/nsswitch.conf", nsswitch, 0o644},
		{"/etc/hosts", hosts, 0o644},
		{"/etc/profile", shProfile, 0o644},
		{"/etc/os-release", osRelease(name, version), 0o644},
		{"/etc/libvirt/libvirtd.conf", libvirtdConf, 0o644},
		{"/etc/libvirt/virtlogd.conf", virtlogdConf, 0o644},
		{"/etc/libvirt/qemu.conf", qemuConf, 0o600},
	}
	for _, f := range files {
		if err := a.File(f.path, []byte(f.data), f.perm); err != nil {
			return err
		}
	}
	return nil
}
