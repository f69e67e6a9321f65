// Command guestagent is PID 1 (/init) of the deskhost desktop image that every WorkSpace
// boots. It brings the guest up (pseudo filesystems, kernel modules, the root volume on
// /sysroot and the user volume on /home, formatting a blank user volume), shows a status
// screen on the VM's display (tty0), logs to the serial console (ttyS0), and serves hostd
// over the virtio-serial port org.deskhost.agent.0 (protocol: deskhost/hostd/agent).
package main

import (
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// Version is reported by the status op.
const Version = agent.Version

// Where things are inside the guest.
const (
	loadOrderPath = "/lib/modules/load.order"
	mke2fsPath    = "/sbin/mke2fs"
	serialDev     = "/dev/ttyS0"
	screenDev     = "/dev/tty0"
)

// guest is the agent's state, shared by the server and the status screen.
type guest struct {
	mu            sync.Mutex
	answered      atomic.Uint64 // requests answered since this process started
	workspaceID   string
	user          string
	hostname      string
	rootDev       string
	rootFSDev     string // the root filesystem's device (rootDev or its first ext partition)
	homeDev       string
	rootMounted   bool
	homeMounted   bool
	homeFormatted bool
	mgmtAddr      string // leased on the management NIC
	errors        []string
	phase         string
	ready         bool
	silentFor     time.Duration // set by the silence op: serve closes its port this long

	log    *logger
	clip   *clipboard // the spice agent port's clipboard (PID 1 mode only)
	screen screen     // nil until screenLoop opens it, or when there is no display

	// filled keeps the fill-memory mappings referenced (and locked) forever.
	filled [][]byte

	// fsPrefix is prepended to the mount points by write-file and read-file (tests only).
	fsPrefix string

	// service: the agent runs as a service of the image's own init (-service), which
	// mounted the volumes: the root volume is "/", not agent.RootMount.
	service bool

	// frozen are the filesystems FIFREEZE holds (freeze.go); freezeGen tells a stale
	// auto-thaw from the current freeze.
	frozen    []string
	freezeGen uint64
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-service" {
		serviceMain() // the graphical image: a systemd service, not init
		return
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "guestagent: this is the init of the deskhost desktop image and only runs as PID 1 inside it (or with -service under an init)")
		os.Exit(2)
	}
	// PID 1 must never exit: the kernel would panic. Ignore the signals that would end it.
	signal.Ignore(syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGPIPE, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPWR)
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(os.Stderr, "deskhost-agent: FATAL: %v\n", r)
			for {
				time.Sleep(time.Hour)
			}
		}
	}()

	g := &guest{log: newLogger(os.Stderr), phase: "starting"}
	if err := mountPseudo(); err != nil {
		g.fail("mounting pseudo filesystems: %v", err)
	}
	g.log.attachSerial(serialDev)
	g.log.Printf("starting (agent %s)", Version)

	cmd := readCmdline()
	g.workspaceID, g.user = cmd.workspace, cmd.user
	for _, e := range cmd.errs {
		g.fail("%s", e)
	}
	g.hostname = "deskhost-desktop"
	if g.workspaceID != "" {
		g.hostname = g.workspaceID
	}
	if err := unix.Sethostname([]byte(g.hostname)); err != nil {
		g.fail("sethostname: %v", err)
	}
	go g.screenLoop()
	g.clip = newClipboard(g.log)
	go g.clip.loop()

	g.setPhase("loading kernel modules")
	start := time.Now()
	n, errs := loadModules(loadOrderPath, g.log)
	for _, e := range errs {
		g.fail("%v", e)
	}
	g.log.Printf("loaded %d modules in %v", n, time.Since(start).Round(time.Millisecond))

	g.bringUpNetwork()

	g.setPhase("mounting volumes")
	g.bringUpVolumes()

	g.setPhase("waiting for the host channel")
	g.serve() // never returns
}

func (g *guest) setPhase(p string) {
	g.mu.Lock()
	g.phase = p
	g.mu.Unlock()
	g.drawScreen()
}

// fail records a problem: it is logged, shown on the screen, and returned by status.
func (g *guest) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	g.log.Printf("ERROR: %s", msg)
	g.mu.Lock()
	g.errors = append(g.errors, msg)
	g.mu.Unlock()
}

// mountPseudo mounts /proc, /sys, /dev (devtmpfs), /run and /tmp.
func mountPseudo() error {
	mounts := []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"sysfs", "/sys", "sysfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{"devtmpfs", "/dev", "devtmpfs", unix.MS_NOSUID, "mode=0755"},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	}
	var firstErr error
	for _, m := range mounts {
		if err := os.MkdirAll(m.dst, 0o755); err != nil && firstErr == nil {
			firstErr = err
		}
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil && err != unix.EBUSY && firstErr == nil {
			firstErr = fmt.Errorf("mount %s on %s: %w", m.fstype, m.dst, err)
		}
	}
	return firstErr
}
