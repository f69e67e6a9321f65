package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// While the host side of the channel is not connected, the port reads EOF (and polls
// readable) at once: the agent then sleeps this long before looking again.
const disconnectedPoll = 200 * time.Millisecond

// How long a response write may wait for the host (the port blocks while the host is
// not connected); after that the response is dropped.
const writeTimeout = 5 * time.Second

// findPort returns /dev/vportNpM of the virtio-serial port called name, from
// /sys/class/virtio-ports/*/name (there is no udev to make /dev/virtio-ports/NAME).
func findPort(sysClass, name string) (string, error) {
	ents, err := os.ReadDir(sysClass)
	if err != nil {
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysClass, e.Name(), "name"))
		if err != nil {
			continue
		}
		if strings.TrimSpace(string(b)) == name {
			return "/dev/" + e.Name(), nil
		}
	}
	return "", os.ErrNotExist
}

// serve opens the agent port and answers requests forever, reopening the port whenever
// it goes away.
func (g *guest) serve() {
	start := time.Now()
	warned := false
	for {
		dev, err := findPort("/sys/class/virtio-ports", agent.ChannelName)
		if err != nil {
			if !warned && time.Since(start) > 5*time.Second {
				g.fail("no virtio-serial port named %s yet (is there a <channel> with that target name?); still looking", agent.ChannelName)
				warned = true
			}
			time.Sleep(disconnectedPoll)
			continue
		}
		fd, err := openPort(dev)
		if err != nil {
			g.log.Printf("opening %s: %v", dev, err)
			time.Sleep(time.Second)
			continue
		}
		g.mu.Lock()
		first := !g.ready
		g.ready = true
		g.phase = "ready"
		g.mu.Unlock()
		if first {
			g.drawScreen()
			g.log.Printf("serving on %s (%s)", dev, agent.ChannelName)
			g.log.Line("ready")
		}
		err = g.servePort(fd)
		unix.Close(fd)
		if errors.Is(err, errSilenced) {
			g.mu.Lock()
			d := g.silentFor
			g.silentFor = 0
			g.mu.Unlock()
			// The agent is gone for the host: nothing reads the port, as if it had died.
			g.log.Printf("silenced: port %s closed for %s", dev, d)
			time.Sleep(d)
			g.log.Printf("silence over; serving again")
			continue
		}
		g.log.Printf("port %s: %v; reopening", dev, err)
		time.Sleep(disconnectedPoll)
	}
}

func openPort(dev string) (int, error) {
	// devtmpfs makes the node shortly after the port appears in sysfs.
	var err error
	for i := 0; i < 50; i++ {
		var fd int
		fd, err = unix.Open(dev, unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if err == nil {
			return fd, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return -1, err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return -1, err
}

// errSilenced ends servePort after a silence request was answered.
var errSilenced = errors.New("silenced")

// errHostGone is returned once by portReader when the host side disconnects.
var errHostGone = errors.New("host disconnected")

// portReader reads from the non-blocking port fd, sleeping while the host is away.
type portReader struct {
	fd        int
	connected bool
}

// Read blocks until there is data. A 0-byte read means the host is not connected (the
// kernel then reports POLLIN|POLLHUP, so poll alone would spin): sleep and retry. The
// first such read after data returns errHostGone so the caller drops a partial line.
func (p *portReader) Read(b []byte) (int, error) {
	for {
		n, err := unix.Read(p.fd, b)
		if n > 0 {
			p.connected = true
			return n, nil
		}
		switch {
		case err == nil: // EOF: the host is not connected
			if p.connected {
				p.connected = false
				return 0, errHostGone
			}
			time.Sleep(disconnectedPoll)
		case errors.Is(err, unix.EAGAIN):
			fds := []unix.PollFd{{Fd: int32(p.fd), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); err != nil && !errors.Is(err, unix.EINTR) {
				return 0, err
			}
		case errors.Is(err, unix.EINTR):
		default:
			return 0, err // ENODEV: the port was unplugged
		}
	}
}

func writeAll(fd int, b []byte, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if n > 0 {
			b = b[n:]
			continue
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			return err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return errors.New("host not reading (timed out)")
		}
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}
		ms := int(left / time.Millisecond)
		if ms > 100 {
			ms = 100 // the port does not wake POLLOUT waiters on every state change
		}
		_, _ = unix.Poll(fds, ms)
		if fds[0].Revents&unix.POLLOUT == 0 {
			// POLLHUP (host gone) returns at once: do not spin until the deadline.
			time.Sleep(50 * time.Millisecond)
		}
	}
	return nil
}

// servePort handles requests until the port fails.
func (g *guest) servePort(fd int) error {
	pr := &portReader{fd: fd}
	br := bufio.NewReaderSize(pr, 64<<10)
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(line) > agent.MaxLineBytes {
				line = nil
				g.reply(fd, agent.Response{Error: fmt.Sprintf("request longer than %d bytes", agent.MaxLineBytes)})
				// Skip to the end of the line.
				for errors.Is(err, bufio.ErrBufferFull) {
					_, err = br.ReadSlice('\n')
				}
			}
			continue
		}
		if errors.Is(err, errHostGone) {
			// A disconnect cuts the line being received: drop it.
			line = nil
			br.Reset(pr)
			continue
		}
		if err != nil {
			return err
		}
		req := line
		line = nil
		if len(strings.TrimSpace(string(req))) == 0 {
			continue
		}
		resp, after := g.safeHandle(req)
		g.reply(fd, resp)
		if after != nil {
			after()
		}
		g.mu.Lock()
		silenced := g.silentFor > 0 && resp.OK
		g.mu.Unlock()
		if silenced {
			return errSilenced
		}
	}
}

func (g *guest) reply(fd int, resp agent.Response) {
	b, err := agent.Encode(resp)
	if err != nil {
		b, _ = agent.Encode(agent.Response{ID: resp.ID, Error: err.Error()})
	}
	if err := writeAll(fd, b, writeTimeout); err != nil {
		g.log.Printf("reply %d dropped: %v", resp.ID, err)
	}
}

// safeHandle is handle, with a panic turned into an error answer: PID 1 keeps serving.
func (g *guest) safeHandle(line []byte) (resp agent.Response, after func()) {
	defer func() {
		if r := recover(); r != nil {
			g.fail("internal error handling a request: %v", r)
			var id struct {
				ID uint64 `json:"id"`
			}
			_ = json.Unmarshal(line, &id)
			resp = agent.Response{ID: id.ID, Error: fmt.Sprintf("internal error: %v", r)}
			after = nil
		}
	}()
	return g.handle(line)
}

// handle answers one request line. after, when set, runs once the reply is written.
func (g *guest) handle(line []byte) (resp agent.Response, after func()) {
	g.answered.Add(1)
	req, err := agent.DecodeRequest(line)
	resp.ID = req.ID
	if err != nil {
		resp.Error = err.Error()
		return resp, nil
	}
	switch req.Op {
	case agent.OpStatus:
		st := g.status()
		resp.Status = &st
	case agent.OpFillMemory:
		n, err := g.fillMemory(req.Marker, req.Percent)
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.BytesFilled = n
	case agent.OpWriteFile:
		if err := g.writeFile(req.Path, []byte(req.Data)); err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.BytesWritten = uint64(len(req.Data))
	case agent.OpReadFile:
		b, err := g.readFile(req.Path)
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.Data = string(b)
	case agent.OpClipboardGet, agent.OpClipboardSet:
		if g.clip == nil {
			resp.Error = "this agent shares no clipboard (it runs as a service of the image's init)"
			return resp, nil
		}
		if req.Op == agent.OpClipboardGet {
			resp.Data = g.clip.get()
		} else if err := g.clip.set(req.Data); err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
	case agent.OpFreeze:
		dirs, err := g.freeze()
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.Filesystems = dirs
	case agent.OpThaw:
		dirs, err := g.thaw()
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.Filesystems = dirs
	case agent.OpSanitize:
		pct, done, err := g.sanitize()
		resp.RootUsedPercent, resp.Sanitized = pct, done
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
	case agent.OpGrowFS:
		fs, disk, err := g.growFS(req.Volume, req.MinBytes)
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.FSBytes, resp.DiskBytes = fs, disk
	case agent.OpReadChunk:
		b, size, err := g.readChunk(req.Path, req.Offset, req.Length)
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.Chunk, resp.FileBytes = b, size
	case agent.OpAdopt:
		ad, err := g.adopt()
		if err != nil {
			resp.Error = err.Error()
			return resp, nil
		}
		resp.Adoption = ad
	case agent.OpShutdown:
		after = func() { g.shutdown(req.Reboot) }
	case agent.OpCrash:
		after = g.crash
	case agent.OpSilence:
		g.mu.Lock()
		g.silentFor = time.Duration(req.Seconds) * time.Second
		g.mu.Unlock()
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
		return resp, nil
	}
	resp.OK = true
	return resp, after
}

func (g *guest) status() agent.Status {
	if g.service {
		g.refreshService()
	}
	total, avail := meminfo()
	var uts unix.Utsname
	_ = unix.Uname(&uts)
	rootFS, homeFS := g.fsBytes(agent.VolumeRoot), g.fsBytes(agent.VolumeUser)
	g.mu.Lock()
	defer g.mu.Unlock()
	host, _ := os.Hostname()
	if host == "" {
		host = g.hostname
	}
	return agent.Status{
		WorkspaceID:       g.workspaceID,
		User:              g.user,
		Hostname:          host,
		UptimeMs:          uint64(uptime() / time.Millisecond),
		RootMounted:       g.rootMounted,
		HomeMounted:       g.homeMounted,
		HomeFormatted:     g.homeFormatted,
		MemTotalKiB:       total,
		MemAvailableKiB:   avail,
		AgentVersion:      Version,
		Answered:          g.answered.Load(),
		KernelRelease:     unix.ByteSliceToString(uts.Release[:]),
		Interfaces:        interfaces(),
		ManagementAddress: g.mgmtAddr,
		RootFSBytes:       rootFS,
		HomeFSBytes:       homeFS,
		Errors:            append([]string(nil), g.errors...),
	}
}

// meminfo returns MemTotal and MemAvailable in KiB.
func meminfo() (total, avail uint64) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, 0
	}
	return parseMeminfo(string(b))
}

func parseMeminfo(s string) (total, avail uint64) {
	for _, l := range strings.Split(s, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "MemTotal:":
			total = v
		case "MemAvailable:":
			avail = v
		}
	}
	return total, avail
}

// fillMemory maps percent% of MemAvailable, fills it with marker and keeps it locked
// and referenced for the rest of the guest's life.
func (g *guest) fillMemory(marker string, percent int) (uint64, error) {
	_, avail := meminfo()
	if avail == 0 {
		return 0, errors.New("cannot read MemAvailable")
	}
	page := uint64(os.Getpagesize())
	size := avail * 1024 * uint64(percent) / 100 / page * page
	if size == 0 {
		return 0, errors.New("nothing to fill: MemAvailable too small")
	}
	mem, err := unix.Mmap(-1, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return 0, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	fillPattern(mem, []byte(marker))
	if err := unix.Mlock(mem); err != nil {
		g.log.Printf("fill-memory: mlock: %v (memory stays filled, maybe not locked)", err)
	}
	g.mu.Lock()
	g.filled = append(g.filled, mem)
	g.mu.Unlock()
	g.log.Printf("fill-memory: %d bytes filled with a %d byte marker", size, len(marker))
	return size, nil
}

// fillPattern fills b with p repeated (the last copy may be cut).
func fillPattern(b, p []byte) {
	if len(b) == 0 || len(p) == 0 {
		return
	}
	n := copy(b, p)
	for n < len(b) {
		n += copy(b[n:], b[:n])
	}
}

// volumeRoot returns the mount (as an os.Root, which refuses symlinks and .. leaving it)
// holding p, and p relative to it. The volume must be mounted: writing to the initramfs
// below an unmounted /home would silently lose the data.
func (g *guest) volumeRoot(p string) (*os.Root, string, error) {
	if err := agent.CheckPath(p); err != nil {
		return nil, "", err
	}
	g.mu.Lock()
	root, home := g.rootMounted, g.homeMounted
	g.mu.Unlock()
	var mnt string
	switch {
	case strings.HasPrefix(p, agent.RootMount+"/"):
		if !root {
			return nil, "", errors.New("the root volume is not mounted")
		}
		mnt = agent.RootMount
	case strings.HasPrefix(p, agent.HomeMount+"/"):
		if !home {
			return nil, "", errors.New("the user volume is not mounted")
		}
		mnt = agent.HomeMount
	}
	dir := mnt
	if g.service && mnt == agent.RootMount {
		dir = "/"
	}
	r, err := os.OpenRoot(g.fsPrefix + dir)
	if err != nil {
		return nil, "", err
	}
	return r, strings.TrimPrefix(p, mnt+"/"), nil
}

func (g *guest) writeFile(p string, data []byte) error {
	r, rel, err := g.volumeRoot(p)
	if err != nil {
		return err
	}
	defer r.Close()
	dir := filepath.Dir(rel)
	if dir != "." {
		if err := r.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	f, err := r.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	// Make the directory entry durable too.
	if d, err := r.Open(dir); err == nil {
		err = d.Sync()
		d.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func (g *guest) readFile(p string) ([]byte, error) {
	r, rel, err := g.volumeRoot(p)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f, err := r.Open(rel)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, agent.MaxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > agent.MaxFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", p, agent.MaxFileBytes)
	}
	return b, nil
}

// shutdown syncs, unmounts the volumes and powers off (or reboots).
func (g *guest) shutdown(reboot bool) {
	if g.service {
		g.serviceShutdown(reboot)
		return
	}
	what := "powering off"
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if reboot {
		what, cmd = "rebooting", unix.LINUX_REBOOT_CMD_RESTART
	}
	g.setPhase(what)
	g.log.Printf("shutdown: %s", what)
	unix.Sync()
	for _, m := range []string{agent.HomeMount, agent.RootMount} {
		if err := unmount(m); err != nil {
			g.log.Printf("shutdown: unmount %s: %v", m, err)
		}
	}
	unix.Sync()
	if err := unix.Reboot(cmd); err != nil {
		g.log.Printf("shutdown: reboot(2): %v", err)
	}
	// Not reached on success.
	for {
		time.Sleep(time.Hour)
	}
}

func unmount(dir string) error {
	var err error
	for i := 0; i < 20; i++ {
		err = unix.Unmount(dir, 0)
		if err == nil || errors.Is(err, unix.EINVAL) { // EINVAL: not mounted
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Still busy: make it read-only so the filesystem is clean, then detach.
	_ = unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_RDONLY, "")
	_ = unix.Unmount(dir, unix.MNT_DETACH)
	return err
}

// crash panics the kernel through sysrq 'c'.
func (g *guest) crash() {
	g.log.Printf("crash: panicking the kernel (sysrq c)")
	unix.Sync()
	_ = os.WriteFile("/proc/sys/kernel/sysrq", []byte("1\n"), 0)
	if err := os.WriteFile("/proc/sysrq-trigger", []byte("c"), 0); err != nil {
		g.fail("crash: writing /proc/sysrq-trigger: %v", err)
	}
}
