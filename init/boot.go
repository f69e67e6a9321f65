package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"deskhost/init/console"
	"deskhost/init/entropy"
	"deskhost/init/hostcfg"
	"deskhost/init/logbuf"
	"deskhost/init/modload"
	"deskhost/init/mounts"
	"deskhost/init/perm"
	"deskhost/init/power"
	"deskhost/init/proc"
	"deskhost/init/sntp"
	"deskhost/init/supervisor"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hwid"
	"deskhost/internal/imagelayout"
)

// Runtime paths.
const (
	runDir        = "/run/deskhost"
	runConfig     = runDir + "/host.yaml"
	runNetcfg     = runDir + "/netcfg.yaml"
	permLogDir    = imagelayout.Perm + "/log"
	permInitDir   = imagelayout.Perm + "/init"
	seedFile      = permInitDir + "/random-seed"
	mgmtOverride  = permInitDir + "/management.yaml"
	netcfgTimeout = 2 * time.Minute
)

// bootLog prints the boot's progress on the consoles (and into init's own log) until
// the console takes the terminals over.
type bootLog struct {
	mu    sync.Mutex
	start time.Time
	outs  []io.Writer
	log   *logbuf.Log
	quiet bool
}

func (b *bootLog) Printf(format string, args ...any) {
	line := fmt.Sprintf(format, args...)
	b.log.Printf("%s", line)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.quiet {
		return
	}
	s := fmt.Sprintf("deskhost: [%6.2fs] %s", time.Since(b.start).Seconds(), line)
	for _, w := range b.outs {
		console.Print(w, s)
	}
}

// silence stops the line output (the console draws the screens from now on).
func (b *bootLog) silence() {
	b.mu.Lock()
	b.quiet = true
	b.mu.Unlock()
}

func boot() {
	start := time.Now()
	initLog := logbuf.New(hostconfig.DefaultLogRingLines)
	blog := &bootLog{start: start, outs: []io.Writer{os.Stdout}, log: initLog}
	slog.SetDefault(slog.New(slog.NewTextHandler(initLog, nil)))
	signal.Ignore(syscall.SIGHUP, syscall.SIGPIPE)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGPWR)

	h := &host{start: start, initLog: initLog, blog: blog, power: make(chan powerRequest, 1), byName: map[string]*supervisor.Service{}, alarms: map[string]string{}}
	h.release, _ = imagelayout.ReadRelease(imagelayout.ReleaseFile)

	// 1. Mounts.
	if err := mounts.MountEarly(); err != nil {
		blog.Printf("mounts: %v", err)
		h.alarm("mounts", "early mounts: "+err.Error())
	}
	if tty1, err := os.OpenFile("/dev/tty1", os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
		blog.outs = append(blog.outs, tty1)
	}
	blog.Printf("%s %s (kernel %s) starting", nonEmpty(h.release.Name, "deskhost"), nonEmpty(h.release.Version, "dev"), h.release.Kernel)
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF)
	if lo, err := netlink.LinkByName("lo"); err == nil {
		_ = netlink.LinkSetUp(lo)
	}
	_ = os.MkdirAll(runDir, 0o700)

	// 2. Reaping.
	h.reaper = proc.Start()

	// 3. Kernel modules.
	t := time.Now()
	if ld, err := modload.Open(imagelayout.ModulesRoot); err != nil {
		blog.Printf("kernel modules: %v", err)
		h.alarm("modules", err.Error())
	} else {
		ld.Log = func(f string, a ...any) { initLog.Printf("modules: "+f, a...) }
		r := ld.Coldplug("/sys")
		blog.Printf("kernel modules: %d loaded in %.1fs (%d rounds)", len(r.Loaded), time.Since(t).Seconds(), r.Rounds)
		if len(r.Failed) > 0 {
			initLog.Printf("modules not loaded: %s", strings.Join(r.Failed, "; "))
		}
	}
	_ = os.WriteFile("/proc/sys/kernel/modprobe", []byte(imagelayout.Modprobe+"\n"), 0o644)

	// 4. Entropy (the seed follows /perm).
	if !entropy.WaitReady(5 * time.Second) {
		h.alarm("entropy", "the kernel's random number generator is not seeded yet")
		blog.Printf("entropy: the kernel's RNG is not ready yet")
	}

	// 5. /perm.
	params := hostcfg.Cmdline(readFile("/proc/cmdline"))
	h.setupPerm(params)

	// 6. Host config.
	cfg, raw, src, leased, err := h.loadConfig(params)
	if err != nil {
		blog.Printf("host config: %v", err)
		h.alarm("config", "host config: "+err.Error())
	} else {
		blog.Printf("host config from %s", src)
		h.cfgSrc = src
	}

	// 7. NIC roles: which NIC is management and which primary, chosen once for this boot
	// and written into the config the services read.
	var over *hwid.Overrides
	if cfg != nil && cfg.ManagedNetwork() {
		t := time.Now()
		h.nics, over = h.resolveNICs(params, cfg, leased)
		for _, p := range h.nics.res.Problems {
			h.alarm("nics", p)
		}
		for _, l := range h.nics.lines() {
			blog.Printf("NIC %s", l)
		}
		h.initLog.Printf("NIC roles chosen in %.1fs", time.Since(t).Seconds())
		if b, err := pinNICs(raw, h.nics.res); err != nil {
			h.alarm("nics", "pinning the NIC roles in the config: "+err.Error())
		} else if c, err := hostcfg.Parse(b); err != nil {
			h.alarm("nics", "the config with the NIC roles pinned: "+err.Error())
		} else {
			raw, cfg = b, c
		}
	}
	if cfg != nil && !cfg.ManagedNetwork() {
		h.nics.note = "the host config has no init.network: the NICs are left as they are"
	}
	if cfg != nil {
		h.cfg, h.cfgRaw = cfg, raw
		eff := raw
		if o, err := readOverride(); err != nil {
			h.alarm("config", "management address setting: "+err.Error())
		} else if o != nil {
			if b, err := effectiveConfig(raw, cfg, o); err != nil {
				h.alarm("config", "management address setting: "+err.Error())
			} else if c, err := hostcfg.Parse(b); err != nil {
				h.alarm("config", "management address setting: "+err.Error())
			} else {
				eff, h.cfg = b, c
				blog.Printf("management address as set on the console: %+v", *o)
			}
		}
		if err := writeFile(runConfig, eff, 0o600); err != nil {
			h.alarm("config", "writing "+runConfig+": "+err.Error())
		}
	}
	in := h.initSection()
	h.setupLogs(in)

	// 8. Host name, resolver. The name: the per-host overrides', the config's, else one
	// made from the management NIC's MAC.
	switch {
	case over != nil && over.Hostname != "":
		in.Hostname = over.Hostname
	case configHostname(raw) != "":
	default:
		in.Hostname = defaultHostname(h.nics)
	}
	if err := unix.Sethostname([]byte(in.Hostname)); err != nil {
		h.alarm("hostname", err.Error())
	}
	_ = os.WriteFile("/etc/hostname", []byte(in.Hostname+"\n"), 0o644)
	if len(in.Nameservers) > 0 {
		var b strings.Builder
		for _, ns := range in.Nameservers {
			fmt.Fprintf(&b, "nameserver %s\n", ns)
		}
		_ = os.WriteFile("/etc/resolv.conf", []byte(b.String()), 0o644)
	}

	// 9. Network: init writes the kernel's network only here, before any service runs.
	if h.cfg != nil {
		h.applyNetwork()
	}

	// 10. Time.
	h.syncTime(in, true)

	// 11. Services.
	h.buildServices(in)
	h.startServices()

	// 12. Console.
	h.startConsoles(in)
	h.readyTimeout = in.ReadyTimeout.Duration
	go h.watchReady(in.ReadyTimeout.Duration)
	go h.refreshWorkspaces()
	if in.Time.Interval != nil && in.Time.Interval.Duration > 0 {
		go func() {
			for range time.Tick(in.Time.Interval.Duration) {
				h.syncTime(in, false)
			}
		}()
	}

	// Wait for a power request.
	var req powerRequest
	select {
	case req = <-h.power:
	case s := <-sigs:
		req = powerRequest{action: power.Reboot}
		switch s {
		case syscall.SIGUSR1:
			req.action = power.Halt
		case syscall.SIGUSR2, syscall.SIGPWR:
			req.action = power.PowerOff
		}
		initLog.Printf("signal %v: %s", s, req.action)
	}
	h.shutdown(req)
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return strings.TrimSpace(string(b))
}

// setupPerm finds, prepares and mounts /perm, then restores the entropy seed and binds
// libvirt's state directories onto it.
func (h *host) setupPerm(params map[string]string) {
	t := time.Now()
	dev, err := perm.Find("/sys", "/dev", params[imagelayout.ParamPerm], imagelayout.PermLabel, 2*time.Second)
	if err != nil {
		h.initLog.Printf("perm: %v", err)
	}
	st := perm.Prepare(context.Background(), perm.Options{Device: dev, Mount: imagelayout.Perm, Mke2fs: imagelayout.Mke2fs,
		Label: imagelayout.PermLabel, Run: h.reaper.Output})
	h.permState = st
	switch {
	case st.InMemory:
		h.blog.Printf("/perm: in memory: %s", st.Problem)
		h.alarm("perm", st.Problem)
	case st.Formatted:
		h.blog.Printf("/perm: formatted blank %s (ext4) and mounted in %.1fs", st.Device, time.Since(t).Seconds())
	default:
		h.blog.Printf("/perm: mounted %s", st.Device)
	}
	for _, d := range []string{permLogDir, permInitDir, imagelayout.Perm + "/libvirt"} {
		_ = os.MkdirAll(d, 0o750)
	}
	if found, err := entropy.Restore(seedFile); err != nil {
		h.initLog.Printf("entropy seed: %v", err)
	} else if found {
		h.initLog.Printf("entropy: seed from %s mixed in and replaced", seedFile)
	}
	// libvirt keeps storage pools, domain definitions and its capability cache (which
	// saves a slow qemu probe at every boot) below these.
	for _, b := range []struct{ sub, target string }{
		{"libvirt/lib", "/var/lib/libvirt"}, {"libvirt/cache", "/var/cache/libvirt"},
		{"libvirt/etc-qemu", "/etc/libvirt/qemu"}, {"libvirt/etc-storage", "/etc/libvirt/storage"},
		{"log/libvirt", "/var/log/libvirt"},
	} {
		if err := mounts.Bind(filepath.Join(imagelayout.Perm, b.sub), b.target); err != nil {
			h.alarm("perm", err.Error())
		}
	}
}

// loadConfig finds the host config (init's defaults when there is none anywhere). leased
// are the NICs a fetch's bootstrap network got DHCP leases on.
func (h *host) loadConfig(params map[string]string) (*hostconfig.Config, []byte, hostcfg.Source, []string, error) {
	f := &hostcfg.Finder{Log: slog.Default()}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw, src, err := f.Find(ctx, params)
	if errors.Is(err, hostcfg.ErrNone) {
		raw, src, err = defaultConfig(), hostcfg.Source{Kind: "init's defaults", Location: "(no host config on the command line, in the image or on /perm)"}, nil
	}
	if err != nil {
		return nil, nil, src, f.Leased, err
	}
	cfg, err := hostcfg.Parse(raw)
	if err != nil {
		return nil, nil, src, f.Leased, fmt.Errorf("%s: %w", src, err)
	}
	return cfg, raw, src, f.Leased, nil
}

// initSection is the config's init section with defaults (defaults alone without a
// config).
func (h *host) initSection() hostconfig.Init {
	if h.cfg != nil {
		return h.cfg.Init
	}
	var in hostconfig.Init
	in.Defaults()
	return in
}

// setupLogs gives init's log and the services' logs their files on /perm.
func (h *host) setupLogs(in hostconfig.Init) {
	h.logMax, h.logKeep, h.logRing = in.Log.MaxBytes, in.Log.Keep, in.Log.RingLines
	if err := h.initLog.SetFile(filepath.Join(permLogDir, "init.log"), h.logMax, h.logKeep); err != nil {
		h.alarm("logs", "init.log: "+err.Error())
	}
}

// syncTime sets the clock from NTP.
func (h *host) syncTime(in hostconfig.Init, boot bool) {
	if len(in.Time.Servers) == 0 {
		h.setTime("hardware clock (no NTP servers configured)")
		if boot {
			h.blog.Printf("time: no NTP servers configured; keeping the hardware clock")
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), in.Time.Timeout.Duration)
	defer cancel()
	r, err := sntp.Sync(ctx, in.Time.Servers)
	if err != nil {
		h.alarm("time", "clock not synchronized: "+firstLine(err.Error()))
		h.setTime("hardware clock (NTP failed)")
		if boot {
			h.blog.Printf("time: NTP failed: %v", firstLine(err.Error()))
		}
		return
	}
	h.clearAlarm("time")
	h.setTime(fmt.Sprintf("ntp %s (stepped %+.3fs)", r.Server, r.Offset.Seconds()))
	if boot {
		h.blog.Printf("time: set from NTP server %s (offset %+.3fs, rtt %v)", r.Server, r.Offset.Seconds(), r.RTT.Round(time.Millisecond))
	} else {
		h.initLog.Printf("time: NTP %s offset %+.3fs", r.Server, r.Offset.Seconds())
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// dialReady is a readiness check: something accepts connections.
func dialReady(network, addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return err
		}
		return c.Close()
	}
}

// libvirtReady reports libvirtd ready when it answers a connection to qemu:///system:
// its socket accepts at once, but it holds clients until its drivers are up, and a
// driver whose start hangs (a forked helper stuck before exec, seen under TCG) would
// otherwise pass for ready and keep hostd waiting forever.
func libvirtReady(socket string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", socket)
		if err != nil {
			return err
		}
		defer c.Close()
		l := libvirt.NewWithDialer(connDialer{c})
		done := make(chan error, 1)
		go func() { done <- l.ConnectToURI(libvirt.QEMUSystem) }()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("open qemu:///system: %w", err)
			}
			return l.Disconnect()
		case <-ctx.Done():
			c.Close() // go-libvirt has no deadline of its own
			<-done
			return fmt.Errorf("open qemu:///system: no answer: %w", ctx.Err())
		}
	}
}

// connDialer hands go-libvirt a connection already made.
type connDialer struct{ c net.Conn }

func (d connDialer) Dial() (net.Conn, error) { return d.c, nil }

// libvirtdReadyTimeout bounds libvirtd's start: it answers within seconds (about 8 s
// under TCG on a loaded machine); one that has not after this is wedged and restarted.
const libvirtdReadyTimeout = 2 * time.Minute

// buildServices makes the service table from the init section.
func (h *host) buildServices(in hostconfig.Init) {
	hostdSock := ""
	if h.cfg != nil {
		hostdSock = h.cfg.Hostd.API.Socket
	}
	type def struct {
		name, path   string
		args         []string
		ready        func(context.Context) error
		disabled     string
		readyTimeout time.Duration
	}
	defs := []def{
		{"netcfg", imagelayout.Netcfg, []string{"apply", "--config", runNetcfg, "--serve"}, nil, "", 0},
		{"virtlogd", imagelayout.Virtlogd, []string{"-f", "/etc/libvirt/virtlogd.conf"}, dialReady("unix", "/run/libvirt/virtlogd-sock"), "", 0},
		{"libvirtd", imagelayout.Libvirtd, []string{"-f", "/etc/libvirt/libvirtd.conf"}, libvirtReady("/run/libvirt/libvirt-sock"), "", libvirtdReadyTimeout},
		{"hostd", imagelayout.Hostd, []string{"serve", "--config", runConfig}, nil, "", 0},
		{"zeroclient", imagelayout.Zeroclient, []string{"serve", "--config", runConfig}, nil, "", 0},
	}
	if hostdSock != "" {
		defs[3].ready = dialReady("unix", hostdSock)
	}
	if h.cfg != nil {
		// zeroclient serves when its broker accepts connections.
		if z, err := h.cfg.Zeroclient.Resolved(); err == nil && z.Broker.Listen != "" {
			if host, port, err := net.SplitHostPort(z.Broker.Listen); err == nil {
				if host == "" || host == "0.0.0.0" || host == "::" {
					host = "127.0.0.1"
				}
				defs[4].ready = dialReady("tcp", net.JoinHostPort(host, port))
			}
		}
	}
	for i := range defs {
		d := &defs[i]
		sc := in.Services[d.name]
		switch {
		case h.cfg == nil:
			d.disabled = "no host config"
		case sc.Enabled != nil && !*sc.Enabled:
			d.disabled = "disabled in the host config"
		case d.name == "netcfg" && h.cfg.Init.Network.Kind == 0:
			d.disabled = "no init.network in the host config"
		case d.name == "netcfg" && (sc.Enabled == nil || !*sc.Enabled) && hostdKeepsNetwork(in):
			// One writer: hostd keeps init.network applied, with its WorkSpaces' taps in
			// it, and serves the management network's DHCP and metadata.
			d.disabled = "hostd keeps the network"
		}
		if _, err := os.Stat(d.path); err != nil && d.disabled == "" {
			d.disabled = "not in this image"
			if sc.Enabled != nil && *sc.Enabled {
				h.alarm("service:"+d.name, d.name+" is enabled in the host config but not in this image")
			}
		}
		if len(sc.Args) > 0 {
			d.args = sc.Args
		}
		if sc.Ready.Unix != "" {
			d.ready = dialReady("unix", sc.Ready.Unix)
		} else if sc.Ready.TCP != "" {
			d.ready = dialReady("tcp", sc.Ready.TCP)
		}
		log := logbuf.New(h.logRing)
		if err := log.SetFile(filepath.Join(permLogDir, d.name+".log"), h.logMax, h.logKeep); err != nil {
			h.initLog.Printf("log file of %s: %v", d.name, err)
		}
		s := supervisor.New(h.reaper, supervisor.Spec{
			Name: d.name, Path: d.path, Args: d.args, Env: sc.Env, Ready: d.ready, Log: log,
			RestartDelay: sc.RestartDelay.Duration, MaxRestartDelay: sc.MaxRestartDelay.Duration, StopTimeout: sc.StopTimeout.Duration,
			Disabled: d.disabled != "", Why: d.disabled, ReadyTimeout: d.readyTimeout,
		})

		h.services = append(h.services, s)
		h.byName[d.name] = s
	}
}

// startServices starts the services in order; virtlogd must answer before libvirtd
// starts (a domain start fails without it). zeroclient starts after the clock was set
// (boot step 9 ran before).
func (h *host) startServices() {
	for _, s := range h.services {
		if s.Disabled() {
			h.blog.Printf("service %s: %s", s.Name(), s.Status().Why)
			continue
		}
		s.Start()
		h.blog.Printf("service %s started", s.Name())
		if s.Name() == "virtlogd" {
			select {
			case <-s.ReadyC():
			case <-time.After(10 * time.Second):
				h.initLog.Printf("virtlogd not ready after 10s; starting libvirtd anyway")
			}
		}
	}
}

// serving reports whether hostd and zeroclient (unless left out) are ready.
func (h *host) serving() bool {
	hd := h.byName["hostd"]
	if hd == nil || hd.Disabled() || !hd.Ready() {
		return false
	}
	zc := h.byName["zeroclient"]
	return zc == nil || zc.Disabled() || zc.Ready()
}

// watchReady logs when the host first serves, and raises an alarm while it does not
// serve past the ready timeout. The console's header follows serving() live.
func (h *host) watchReady(timeout time.Duration) {
	if hd := h.byName["hostd"]; hd == nil || hd.Disabled() {
		h.alarm("ready", "hostd is not running: "+whyDisabled(hd))
		return
	}
	deadline := h.start.Add(timeout)
	logged := false
	for {
		if h.serving() {
			h.clearAlarm("ready")
			if !logged {
				logged = true
				h.mu.Lock()
				h.everReady = true
				h.mu.Unlock()
				h.initLog.Printf("%s after %.1fs", imagelayout.ReadyLine, time.Since(h.start).Seconds())
			}
		} else if time.Now().After(deadline) {
			h.alarm("ready", fmt.Sprintf("hostd or zeroclient not serving (%v after boot)", time.Since(h.start).Round(time.Second)))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// hostdKeepsNetwork: hostd runs and applies init.network itself.
func hostdKeepsNetwork(in hostconfig.Init) bool {
	hs := in.Services["hostd"]
	return hs.Enabled == nil || *hs.Enabled
}

func whyDisabled(s *supervisor.Service) string {
	if s == nil {
		return "not configured"
	}
	return s.Status().Why
}

// startConsoles runs the operator console on each terminal, restarting it should it
// fail (a console bug must never take PID 1 down).
func (h *host) startConsoles(in hostconfig.Init) {
	h.blog.Printf("operator console on %s", strings.Join(in.Console.TTYs, ", "))
	h.blog.silence()
	for _, name := range in.Console.TTYs {
		baud := 0
		if strings.HasPrefix(name, "ttyS") || strings.HasPrefix(name, "ttyAMA") || strings.HasPrefix(name, "ttyUSB") {
			baud = in.Console.Baud
		}
		go func(name string, baud int) {
			for {
				err := h.runConsole(name, baud)
				h.initLog.Printf("console %s: %v; restarting it", name, err)
				time.Sleep(2 * time.Second)
			}
		}(name, baud)
	}
}

func (h *host) runConsole(name string, baud int) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
		}
	}()
	f, err := console.OpenTTY(name, baud)
	if err != nil {
		return err
	}
	c := console.New(f, h, name)
	c.SetReopen(func() (console.Terminal, error) { return console.OpenTTY(name, baud) })
	return c.Run(context.Background())
}

// shutdown stops everything and ends the system.
func (h *host) shutdown(req powerRequest) {
	h.setPhase("shutting down")
	h.initLog.Printf("shutdown: %s", req.action)
	// Reverse start order: the broker first, virtlogd after the guests' libvirtd.
	for i := len(h.services) - 1; i >= 0; i-- {
		s := h.services[i]
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		s.Stop(ctx)
		cancel()
	}
	if !h.permState.InMemory && !req.factoryReset {
		if err := entropy.Save(seedFile); err != nil {
			h.initLog.Printf("entropy seed: %v", err)
		}
	}
	power.KillAll(5*time.Second, h.initLog.Printf)
	for _, s := range h.services {
		s.Log().Close()
	}
	h.initLog.Printf("unmounting and %s", req.action)
	h.initLog.Close()
	// Unmount first (libvirt's binds, then /perm itself): a file system unmounted after
	// the wipe would write its superblock back.
	failed := mounts.UnmountAll()
	if req.factoryReset && h.permState.Device != "" {
		switch {
		case mounts.Mounted(imagelayout.Perm) && !h.permState.InMemory:
			fmt.Fprintf(os.Stdout, "\r\ndeskhost: factory reset: /perm is still mounted (%s); not wiping it\r\n", strings.Join(failed, "; "))
		default:
			if err := perm.Wipe(h.permState.Device); err != nil {
				fmt.Fprintf(os.Stdout, "\r\ndeskhost: factory reset: %v\r\n", err)
			} else {
				fmt.Fprintf(os.Stdout, "\r\ndeskhost: factory reset: %s wiped; the next boot formats it\r\n", h.permState.Device)
			}
		}
	}
	fmt.Fprintf(os.Stdout, "\r\ndeskhost: %s\r\n", req.action)
	if err := power.Finish(req.action, h.initLog.Printf); err != nil {
		fmt.Fprintf(os.Stdout, "deskhost: %s failed: %v\r\n", req.action, err)
	}
	select {} // PID 1 must never exit
}

// runOutput runs a program to completion through the reaper.
func (h *host) runOutput(timeout time.Duration, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return h.reaper.Output(cmd, timeout)
}
