// Command libvirtrun runs virtlogd and libvirtd on a development or CI machine that has no
// systemd, keeping all of libvirt's state in a runtime directory of the project's own and
// stopping exactly what it started.
//
//	libvirtrun start --root DIR [--netns NAME]   start, wait until libvirtd answers, print its socket
//	libvirtrun stop  --root DIR   stop libvirtd, the guests it left, then virtlogd
//	libvirtrun status --root DIR  exit 0 if running
//
// How: "start" re-executes itself as a supervisor in a private mount namespace, where
// DIR/{etc,run,lib,log,cache} are bind-mounted over /etc/libvirt, /run/libvirt,
// /var/lib/libvirt, /var/log/libvirt and /var/cache/libvirt, so the daemons' fixed paths
// land in DIR and nothing of the host's own libvirt is touched. The supervisor is a child
// subreaper: qemu processes whose libvirtd-side parent exits are reaped at once instead of
// lingering as zombies (which makes DomainDestroy take ~1.5 s on these machines).
// Clients reach libvirtd at qemu:///system?socket=DIR/run/libvirt-sock. With --netns the
// daemons (and so the guests' qemu, and the taps it opens) live in that network namespace.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/internal/buildinfo"
	"deskhost/internal/logging"
	"deskhost/internal/reaper"
	"deskhost/internal/virtlogconf"
)

// The libvirt paths Debian's libvirtd uses, and the runtime subdirectory bound over each.
var binds = []struct {
	sub, target string
	mode        os.FileMode
}{
	{"etc", "/etc/libvirt", 0o700},
	{"run", "/run/libvirt", 0o755},
	{"lib", "/var/lib/libvirt", 0o755},
	{"log", "/var/log/libvirt", 0o700},
	{"cache", "/var/cache/libvirt", 0o755},
}

const (
	// qemu runs unprivileged as libvirt-qemu. libvirt's DAC driver keeps dynamic ownership
	// for domains that ask for it; hostd's domains carry a static label with relabel='no'
	// and hostd hands each WorkSpace's own files over itself (hostd/confine), so the shared
	// image files are never chowned. cgroup_controllers is filled in at start (see
	// cgroupControllers). Guest memory never goes into core dumps.
	qemuConfTemplate = `# written by libvirtrun
user = "libvirt-qemu"
group = "libvirt-qemu"
dynamic_ownership = 1
%s
dump_guest_core = 0
security_driver = "none"
`
	libvirtdConf = `# written by libvirtrun
unix_sock_group = "root"
unix_sock_ro_perms = "0700"
unix_sock_rw_perms = "0700"
unix_sock_admin_perms = "0700"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
`
	virtlogdConfBase = `# written by libvirtrun
log_outputs = "3:file:/var/log/libvirt/virtlogd.log"
`
)

// virtlogdConf caps guest serial logs (hostd routes them through virtlogd).
var virtlogdConf = virtlogdConfBase + virtlogconf.Settings()

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "version":
		buildinfo.Print(os.Stdout, "libvirtrun")
		return
	case "-h", "-help", "--help", "help":
		fmt.Print(usageText)
		return
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	root := fs.String("root", "/run/deskhost/libvirt", "runtime directory for libvirt's state")
	timeout := fs.Duration("timeout", 60*time.Second, "how long start waits for libvirtd to answer")
	netns := fs.String("netns", "", "network namespace (ip netns) to run the daemons in")
	logFlags := logging.Register(fs)
	_ = fs.Parse(os.Args[2:])
	if _, err := logFlags.Options(); err != nil {
		fatal(err)
	}
	abs, err := filepath.Abs(*root)
	if err != nil {
		fatal(err)
	}
	switch os.Args[1] {
	case "start":
		err = start(abs, *netns, *timeout, logArgs(fs))
	case "stop":
		err = stop(abs)
	case "status":
		if _, ok := running(abs); !ok {
			fmt.Println("libvirtrun: not running")
			os.Exit(1)
		}
		fmt.Println("libvirtrun: running, socket", socketPath(abs))
	case "supervise":
		err = supervise(abs, logFlags)
	default:
		usage()
	}
	if err != nil {
		fatal(err)
	}
}

const usageText = `usage: libvirtrun start|stop|status [--root DIR] [--netns NAME] [--timeout 60s]
       libvirtrun version
start also takes --log-format text|json and --log-level for the supervisor's log
(DIR/supervisor.log).
`

func usage() {
	fmt.Fprint(os.Stderr, usageText)
	os.Exit(2)
}

// logArgs are the --log-* flags given to start, handed on to the supervisor.
func logArgs(fs *flag.FlagSet) []string {
	var args []string
	fs.Visit(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "log-") {
			args = append(args, "--"+f.Name, f.Value.String())
		}
	})
	return args
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "libvirtrun:", err)
	os.Exit(1)
}

func socketPath(root string) string { return filepath.Join(root, "run", "libvirt-sock") }
func pidPath(root string) string    { return filepath.Join(root, "supervisor.pid") }

// running returns the supervisor's pid if it is alive.
func running(root string) (int, bool) {
	b, err := os.ReadFile(pidPath(root))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, false
	}
	// The pid file may be stale and the pid reused: check it is our supervisor.
	cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !strings.Contains(string(cmd), "supervise") {
		return 0, false
	}
	return pid, true
}

func start(root, netns string, timeout time.Duration, logArgs []string) error {
	if pid, ok := running(root); ok {
		fmt.Printf("libvirtrun: already running (pid %d), socket %s\n", pid, socketPath(root))
		return nil
	}
	for _, b := range binds {
		d := filepath.Join(root, b.sub)
		if err := os.MkdirAll(d, b.mode); err != nil {
			return err
		}
		if err := os.Chmod(d, b.mode); err != nil {
			return err
		}
	}
	files := map[string]string{"qemu.conf": fmt.Sprintf(qemuConfTemplate, cgroupControllers()), "libvirtd.conf": libvirtdConf, "virtlogd.conf": virtlogdConf}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	_ = os.Remove(socketPath(root))
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(root, "supervisor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{"supervise", "--root", root}, logArgs...)
	cmd := exec.Command(self, args...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, self}, args...)...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	// Go makes "/" recursively private in the new namespace before exec, so the binds
	// below never propagate to the host.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Unshareflags: syscall.CLONE_NEWNS}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start supervisor: %w", err)
	}
	if err := os.WriteFile(pidPath(root), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t0 := time.Now()
	deadline := time.After(timeout)
	for {
		if answers(socketPath(root)) {
			fmt.Printf("libvirtrun: libvirtd answers after %.1fs (supervisor pid %d); socket %s\n",
				time.Since(t0).Seconds(), cmd.Process.Pid, socketPath(root))
			return nil
		}
		select {
		case err := <-exited:
			return fmt.Errorf("supervisor exited (%v); see %s", err, filepath.Join(root, "supervisor.log"))
		case <-deadline:
			return fmt.Errorf("libvirtd did not answer within %s; see %s and %s", timeout,
				filepath.Join(root, "supervisor.log"), filepath.Join(root, "log", "libvirtd.log"))
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// cgroupControllers is qemu.conf's cgroup_controllers line: cpu and memory where
// /sys/fs/cgroup is cgroup v2 offering both (libvirt then makes a cgroup per domain under
// /sys/fs/cgroup/machine and hostd's limits apply), none elsewhere. On a host whose cpu and
// memory controllers are bound to cgroup v1 hierarchies, libvirt would put qemu into v1
// cgroups at the hierarchies' roots, outside whatever cgroup libvirtd itself is in.
func cgroupControllers() string {
	var fs unix.Statfs_t
	if unix.Statfs("/sys/fs/cgroup", &fs) == nil && fs.Type == unix.CGROUP2_SUPER_MAGIC {
		if b, err := os.ReadFile("/sys/fs/cgroup/cgroup.controllers"); err == nil {
			have := " " + strings.Join(strings.Fields(string(b)), " ") + " "
			if strings.Contains(have, " cpu ") && strings.Contains(have, " memory ") {
				return `cgroup_controllers = [ "cpu", "memory" ]`
			}
		}
	}
	return "# no cgroup v2 with cpu and memory here: no per-domain cgroups\ncgroup_controllers = [ ]"
}

// answers reports whether libvirtd accepts a connection and replies to a keepalive-free
// RPC: a bare connect is not enough, libvirtd accepts before its drivers are ready.
func answers(sock string) bool {
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	out, err := exec.Command("virsh", "-c", "qemu:///system?socket="+sock, "version").CombinedOutput()
	return err == nil && strings.Contains(string(out), "Running hypervisor")
}

func stop(root string) error {
	pid, ok := running(root)
	if !ok {
		fmt.Println("libvirtrun: not running")
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		return fmt.Errorf("signal supervisor %d: %w", pid, err)
	}
	for i := 0; i < 300; i++ { // the supervisor gives its children 20 s
		if syscall.Kill(pid, 0) != nil {
			_ = os.Remove(pidPath(root))
			fmt.Printf("libvirtrun: stopped (supervisor pid %d)\n", pid)
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	return fmt.Errorf("supervisor %d did not stop in 30 s; killed", pid)
}

// supervise runs inside the private mount namespace.
func supervise(root string, logFlags *logging.Flags) error {
	log, err := logFlags.Logger(os.Stderr)
	if err != nil {
		return err
	}
	for _, b := range binds {
		if err := os.MkdirAll(b.target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(filepath.Join(root, b.sub), b.target, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s over %s: %w", b.sub, b.target, err)
		}
	}
	if err := reaper.Become(); err != nil {
		return err
	}
	exits := make(chan reaper.Exit, 64)
	go reaper.Loop(exits)

	// Pid files in the runtime directory: the defaults (/run/virtlogd.pid, /run/libvirtd.pid)
	// are outside the bound directories and would clash with another instance.
	virtlogd, err := spawn(log, "virtlogd", "-f", "/etc/libvirt/virtlogd.conf", "-p", filepath.Join(root, "virtlogd.pid"))
	if err != nil {
		return err
	}
	if err := waitPath(filepath.Join(root, "run", "virtlogd-sock"), 10*time.Second); err != nil {
		return fmt.Errorf("virtlogd: %w", err)
	}
	libvirtd, err := spawn(log, "libvirtd", "-f", "/etc/libvirt/libvirtd.conf", "-p", filepath.Join(root, "libvirtd.pid"))
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	for {
		select {
		case s := <-sigs:
			log.Info("stopping", "signal", s.String())
			shutdown(log, libvirtd, virtlogd, exits)
			return nil
		case e := <-exits:
			switch e.PID {
			case libvirtd, virtlogd:
				log.Error("daemon exited", "pid", e.PID, "status", e.Status.ExitStatus())
				shutdown(log, libvirtd, virtlogd, exits)
				return fmt.Errorf("daemon %d exited", e.PID)
			default:
				log.Info("reaped", "pid", e.PID)
			}
		}
	}
}

func spawn(log *slog.Logger, name string, args ...string) (int, error) {
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("start %s: %w", name, err)
	}
	log.Info("started", "daemon", name, "pid", cmd.Process.Pid)
	// The reaper loop waits for it; exec.Cmd.Wait must not be called.
	return cmd.Process.Pid, nil
}

// shutdown stops libvirtd, then any guests it left (they are re-parented to us, so they are
// ours), then virtlogd, which must outlive the guests whose consoles it logs.
func shutdown(log *slog.Logger, libvirtd, virtlogd int, exits <-chan reaper.Exit) {
	terminate(log, []int{libvirtd}, exits, 10*time.Second)
	if kids := children(); len(kids) > 0 {
		kids = without(kids, virtlogd)
		log.Info("stopping guests left by libvirtd", "pids", kids)
		terminate(log, kids, exits, 5*time.Second)
	}
	terminate(log, []int{virtlogd}, exits, 5*time.Second)
}

func without(pids []int, p int) []int {
	out := pids[:0]
	for _, x := range pids {
		if x != p {
			out = append(out, x)
		}
	}
	return out
}

// terminate sends SIGTERM, waits until each pid is reaped, then SIGKILLs the rest.
func terminate(log *slog.Logger, pids []int, exits <-chan reaper.Exit, grace time.Duration) {
	left := map[int]bool{}
	for _, p := range pids {
		if p > 0 && syscall.Kill(p, syscall.SIGTERM) == nil {
			left[p] = true
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for len(left) > 0 {
		select {
		case e := <-exits:
			delete(left, e.PID)
		case <-ctx.Done():
			for p := range left {
				log.Warn("did not stop in time, killing", "pid", p)
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
			return
		}
	}
}

// children lists our direct children from /proc (re-parented orphans included).
func children() []int {
	self := os.Getpid()
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// Fields after the command name, which is in parentheses and may hold spaces.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(self) {
			out = append(out, pid)
		}
	}
	return out
}

func waitPath(p string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return errors.New(p + " did not appear")
}
