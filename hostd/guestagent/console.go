package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// logger writes "deskhost-agent: ..." lines to the serial console (and, until that is
// open, to the kernel console).
type logger struct {
	mu sync.Mutex
	w  io.Writer
}

func newLogger(w io.Writer) *logger { return &logger{w: w} }

func (l *logger) attachSerial(dev string) {
	f, err := os.OpenFile(dev, os.O_WRONLY|unix.O_NOCTTY, 0)
	if err != nil {
		l.Printf("cannot open %s (%v): logging to the kernel console", dev, err)
		return
	}
	l.mu.Lock()
	l.w = f
	l.mu.Unlock()
}

func (l *logger) Printf(format string, args ...any) {
	l.Line(fmt.Sprintf(format, args...))
}

// Line writes one line as is, prefixed only with "deskhost-agent: ".
func (l *logger) Line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	// \r\n: the serial line may be read by a terminal without onlcr.
	_, _ = io.WriteString(l.w, "deskhost-agent: "+strings.TrimRight(s, "\n")+"\r\n")
}

// screen is the VM's display: the status screen is drawn there.
type screen interface {
	draw(lines []screenLine)
}

type screenLine struct {
	text string
	attr byte // VGA attribute: 0x07 normal, 0x1f title, 0x0c problem
}

// openScreen picks how to reach the display. With a bzImage boot the kernel runs its
// VGA text console and tty0 is it. A PVH boot (qemu's direct ELF boot) passes the kernel
// no screen_info, so tty0 is the "dummy device": nothing reaches the display. The
// firmware left the VGA card in 80x25 text mode, so the agent then writes the screen
// straight into text memory at 0xB8000 through /dev/mem (the low 1 MiB stays accessible
// under STRICT_DEVMEM).
func openScreen(log *logger) screen {
	con, _ := os.ReadFile("/sys/class/vtconsole/vtcon0/name")
	if !strings.Contains(string(con), "dummy") {
		if f, err := os.OpenFile(screenDev, os.O_WRONLY|unix.O_NOCTTY, 0); err == nil {
			// Never blank the console (a screenshot must show the status), cursor off.
			_, _ = io.WriteString(f, "\033[9;0]\033[14;0]\033[?25l")
			return &ttyScreen{f: f}
		}
	}
	v, err := openVGAText()
	if err != nil {
		log.Printf("no status screen: tty0 is %q and VGA text memory: %v", strings.TrimSpace(string(con)), err)
		return nil
	}
	return v
}

type ttyScreen struct{ f *os.File }

func (t *ttyScreen) draw(lines []screenLine) {
	var b strings.Builder
	b.WriteString("\033[2J\033[H") // clear, home
	for _, l := range lines {
		b.WriteString(l.text + "\r\n")
	}
	_, _ = io.WriteString(t.f, b.String())
}

const (
	vgaTextBase = 0xb8000
	vgaCols     = 80
	vgaRows     = 25
)

type vgaText struct{ mem []byte }

func openVGAText() (*vgaText, error) {
	fd, err := unix.Open("/dev/mem", unix.O_RDWR|unix.O_SYNC|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	mem, err := unix.Mmap(fd, vgaTextBase, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap /dev/mem at %#x: %w", vgaTextBase, err)
	}
	// Hide the hardware cursor: CRTC register 0x0A (cursor start), bit 5 = off.
	if port, err := os.OpenFile("/dev/port", os.O_WRONLY, 0); err == nil {
		_, _ = port.WriteAt([]byte{0x0a}, 0x3d4)
		_, _ = port.WriteAt([]byte{0x20}, 0x3d5)
		port.Close()
	}
	return &vgaText{mem: mem}, nil
}

func (v *vgaText) draw(lines []screenLine) {
	v.render(lines)
}

// render writes lines into the 80x25 character/attribute cells, clearing the rest.
func (v *vgaText) render(lines []screenLine) {
	for row := 0; row < vgaRows; row++ {
		var l screenLine
		if row < len(lines) {
			l = lines[row]
		}
		attr := l.attr
		if attr == 0 {
			attr = 0x07
		}
		text := []rune(l.text)
		for col := 0; col < vgaCols; col++ {
			ch := byte(' ')
			if col < len(text) {
				if r := text[col]; r >= 0x20 && r < 0x7f {
					ch = byte(r)
				} else {
					ch = '?'
				}
			}
			i := (row*vgaCols + col) * 2
			v.mem[i] = ch
			v.mem[i+1] = attr
		}
	}
}

// screenLoop redraws the status screen every few seconds (for the uptime).
func (g *guest) screenLoop() {
	defer func() {
		if r := recover(); r != nil { // a display problem must not take PID 1 down
			g.fail("status screen: %v", r)
		}
	}()
	scr := openScreen(g.log)
	if scr == nil {
		return
	}
	g.mu.Lock()
	g.screen = scr
	g.mu.Unlock()
	for {
		g.drawScreen()
		time.Sleep(10 * time.Second)
	}
}

func (g *guest) drawScreen() {
	g.mu.Lock()
	scr := g.screen
	ws, user, host, phase := g.workspaceID, g.user, g.hostname, g.phase
	root, home, formatted := g.rootMounted, g.homeMounted, g.homeFormatted
	rootDev, homeDev := g.rootDev, g.homeDev
	errs := append([]string(nil), g.errors...)
	g.mu.Unlock()
	if scr == nil {
		return
	}
	scr.draw(statusLines(ws, user, host, phase, rootDev, homeDev, root, home, formatted, errs, uptime()))
}

func statusLines(ws, user, host, phase, rootDev, homeDev string, root, home, formatted bool, errs []string, up time.Duration) []screenLine {
	mark := func(ok bool) string {
		if ok {
			return "mounted"
		}
		return "NOT mounted"
	}
	orNone := func(s string) string {
		if s == "" {
			return "(none)"
		}
		return s
	}
	h := mark(home)
	if formatted {
		h += " (formatted this boot)"
	}
	n := func(s string) screenLine { return screenLine{text: s} }
	lines := []screenLine{
		{text: "  deskhost desktop" + strings.Repeat(" ", 62), attr: 0x1f},
		n(""),
		n("  WorkSpace    " + orNone(ws)),
		n("  User         " + orNone(user)),
		n("  Hostname     " + host),
		n(fmt.Sprintf("  Root volume  %-9s on /sysroot  %s", orNone(rootDev), mark(root))),
		n(fmt.Sprintf("  User volume  %-9s on /home     %s", orNone(homeDev), h)),
		n("  State        " + phase),
		n("  Uptime       " + up.Truncate(time.Second).String()),
		n("  Agent        " + Version),
	}
	if len(errs) > 0 {
		lines = append(lines, n(""), screenLine{text: "  Problems:", attr: 0x0c})
		for _, e := range errs {
			lines = append(lines, screenLine{text: "   - " + e, attr: 0x0c})
		}
	}
	return lines
}

func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// cmdline is what the agent reads from the kernel command line.
type cmdline struct {
	workspace string
	user      string
	errs      []string
}

func readCmdline() cmdline {
	b, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return cmdline{errs: []string{fmt.Sprintf("reading /proc/cmdline: %v", err)}}
	}
	return parseCmdline(string(b))
}

// parseCmdline extracts deskhost.workspace= and deskhost.user=. The WorkSpace id becomes
// the hostname, so it must be a valid host name label.
func parseCmdline(s string) cmdline {
	var c cmdline
	for _, f := range strings.Fields(s) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		switch k {
		case "deskhost.workspace":
			if err := checkWorkspaceID(v); err != nil {
				c.errs = append(c.errs, err.Error())
				continue
			}
			c.workspace = v
		case "deskhost.user":
			// hostd query-escapes it: the kernel splits its command line at spaces, and
			// Linux WorkSpace user names may have some.
			if u, err := url.QueryUnescape(v); err == nil {
				v = u
			}
			if len(v) > 256 || strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				c.errs = append(c.errs, "deskhost.user on the kernel command line is too long or has control characters")
				continue
			}
			c.user = v
		}
	}
	if c.workspace == "" && len(c.errs) == 0 {
		c.errs = append(c.errs, "no deskhost.workspace= on the kernel command line")
	}
	return c
}

// checkWorkspaceID accepts a WorkSpace id, or an image id: hostd test-boots an imported
// image under its own id before any WorkSpace has it.
func checkWorkspaceID(v string) error {
	rest, ok := strings.CutPrefix(v, "ws-")
	if !ok {
		rest, ok = strings.CutPrefix(v, "wsi-")
	}
	if !ok || len(rest) < 1 || len(v) > 63 {
		return fmt.Errorf("deskhost.workspace=%q: want ws- (or wsi-) followed by 1 to 60 characters [0-9a-z]", v)
	}
	for _, c := range rest {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return fmt.Errorf("deskhost.workspace=%q: character %q outside [0-9a-z]", v, c)
		}
	}
	return nil
}
