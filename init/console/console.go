// Package console is the operator console init runs on each terminal (ttyS0, tty1): a
// status screen and a menu that work on a plain 80×24 VT100 serial line without a mouse.
// Only cursor addressing, erase-line and erase-screen are used; every choice is one key
// (digits, letters, Enter, Esc or q to go back), and text is typed into a small line
// editor (Backspace, Ctrl-U). Rows are redrawn only when they change, so a serial line is
// not flooded. Ctrl-L redraws everything.
//
// Screens: the status screen (host name, version, management address, time, /perm,
// services, WorkSpaces by state, alarms) with the menu
//
//	1 Network              the NICs and the rule that chose each one's role; set DHCP
//	                       or a static management address
//	2 Restart a service
//	3 Service logs         page through a service's log
//	4 WorkSpaces           list them; reboot or stop one
//	5 Shell                a root shell on this terminal (exit returns here), when the
//	                       host config enables it
//	6 Reboot               after y
//	7 Power off            after y
//	8 Factory reset        after typing RESET: wipes /perm and reboots
//	9 Hosts                the fleet's hosts (state, capacity, load, join codes);
//	                       approve a host waiting to join
//	P Password             change the console password
//	L Lock                 ask for the password again
//
// A host of a fleet shows its place in it on the status screen: while it waits to join,
// the join code an administrator approves; once in, how many hosts are in which state.
//
// Like ESXi's DCUI, looking is free and changing is not: what the status screen, the
// network screen, the logs, the WorkSpace and host lists show needs no password; every
// action that changes the host or the fleet (a new address, a restart, a WorkSpace reboot
// or stop, a join approval, power, factory reset, the shell) asks for the console password
// (Password) first. The console
// stays unlocked until AutoLockIdle passes without a key or L is pressed. Until a
// password is set (in the host config, or here on first use), the first such action
// asks for a new one.
package console

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
)

// Size of the screen the console draws for.
const (
	Cols = 80
	Rows = 24
	// width is what a row may hold: writing the last column of the last row would
	// scroll some terminals.
	width = Cols - 1
)

// ServiceInfo is one service's line on the status screen.
type ServiceInfo struct {
	Name     string
	State    string
	PID      int
	Restarts int
	Since    time.Time
	LastExit string
	Why      string
}

// Workspace is one WorkSpace as hostd reports it.
type Workspace struct {
	ID, State, User, Directory, IP string
}

// FleetHost is one host of the fleet as hostd lists it.
type FleetHost struct {
	ID, Name, State, Address, HardwareID string
	JoinCode                             string // a host waiting to join (State "joining")
	This                                 bool   // the host this console runs on
	VCPUs, VCPUsCap                      int    // reserved / capacity
	MemoryMiB, MemoryMiBCap              int
	Workspaces                           int
}

// Status is what the status screen shows.
type Status struct {
	// Phase is "starting", "ready", "degraded" or "shutting down"; the header reads
	// "deskhost: <phase>", so the ready host shows imagelayout.ReadyLine.
	Phase                     string
	Hostname, Version, Kernel string
	Management, Primary       string
	// NetworkWriter is who keeps the network applied: hostd, netcfg or init.
	NetworkWriter string
	// NICs are the network screen's lines: each NIC with its role and the rule that
	// chose it, and the hardware identity.
	NICs           []string
	Time, Storage  string
	Uptime         time.Duration
	Orphans        int // processes init reaped that it had not started
	Services       []ServiceInfo
	Workspaces     map[string]int // by state
	WorkspacesNote string         // why there are no counts
	// Fleet is the host's place in its fleet: its join code while it waits for approval,
	// then the hosts by state; empty for a host in no fleet.
	Fleet  string
	Alarms []string
}

// Management is the management NIC's addressing as the operator sets it.
type Management struct {
	DHCP    bool
	Address string // CIDR, static only
	Gateway string // optional, static only
}

// Host is what the console shows and acts on (init implements it).
type Host interface {
	Status() Status
	ServiceLog(name string) []string
	RestartService(name string) error
	Workspaces(ctx context.Context) ([]Workspace, error)
	// WorkspaceAction runs "reboot" or "stop" on a WorkSpace.
	WorkspaceAction(ctx context.Context, action, id string) (string, error)
	// Hosts lists the fleet's hosts, those waiting to join included.
	Hosts(ctx context.Context) ([]FleetHost, error)
	// ApproveHost lets the host that shows this join code join the fleet.
	ApproveHost(ctx context.Context, code string) (string, error)
	Management() (Management, error)
	SetManagement(ctx context.Context, m Management) (string, error)
	// Shell runs an interactive shell on the terminal /dev/NAME until it exits.
	Shell(name string) error
	// ShellEnabled reports whether the host config enables the shell.
	ShellEnabled() bool
	// Password is the console password, one for every terminal.
	Password() *Password
	// Power performs "reboot", "poweroff" or "factory-reset"; it returns only on error.
	Power(action string) error
}

// Terminal is the console's line: *os.File for a tty; the read deadline lets the console
// stop reading while a shell owns the terminal.
type Terminal interface {
	io.ReadWriter
	SetReadDeadline(t time.Time) error
}

// Console is one terminal's console.
type Console struct {
	term Terminal
	host Host
	name string // the terminal's name, for the shell

	keys    chan key
	pause   chan chan struct{} // ask the reader to stop; it answers, then waits for resume
	resume  chan struct{}
	mu      sync.Mutex
	drawn   []string // rows as last drawn (nil: unknown, redraw all)
	message string   // the bottom line
	refresh time.Duration
	// unlocked: the console password was given; lastKey ends it after autoLock. Both
	// belong to Run's goroutine; autoLock is under mu.
	unlocked bool
	lastKey  time.Time
	autoLock time.Duration
	// reopen gives a fresh terminal after a shell: a shell that led its session hangs
	// a serial line up when it exits, and every open file of the line then fails.
	reopen func() (Terminal, error)
}

// SetReopen sets how the console gets its terminal back after a shell.
func (c *Console) SetReopen(f func() (Terminal, error)) { c.reopen = f }

// New returns a console on term.
func New(term Terminal, host Host, name string) *Console {
	return &Console{term: term, host: host, name: name, keys: make(chan key, 64),
		pause: make(chan chan struct{}), resume: make(chan struct{}), refresh: time.Second, autoLock: AutoLockIdle}
}

// Run runs the console until ctx ends.
func (c *Console) Run(ctx context.Context) error {
	go c.readLoop(ctx)
	c.redrawAll()
	for ctx.Err() == nil {
		if err := c.mainScreen(ctx); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Print writes a line outside the screen model (boot messages before Run).
func Print(w io.Writer, line string) {
	fmt.Fprintf(w, "%s\r\n", line)
}

// ---- drawing ----

// frame is the screen's rows (at most Rows; shorter frames leave the rest blank).
type frame []string

func clip(s string) string {
	r := []rune(s)
	if len(r) > width {
		r = r[:width]
	}
	return string(r)
}

// draw brings the terminal to f, writing only changed rows, and leaves the cursor at
// (row, col) (1-based), where typed text echoes.
func (c *Console) draw(f frame, row, col int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var b strings.Builder
	if c.drawn == nil {
		b.WriteString("\x1b[0m\x1b[H\x1b[2J")
		c.drawn = make([]string, Rows)
		for i := range c.drawn {
			c.drawn[i] = ""
		}
	}
	for i := 0; i < Rows; i++ {
		want := ""
		if i < len(f) {
			want = clip(f[i])
		}
		if i == Rows-1 && c.message != "" {
			want = clip(c.message)
		}
		if c.drawn[i] == want {
			continue
		}
		fmt.Fprintf(&b, "\x1b[%d;1H%s\x1b[K", i+1, want)
		c.drawn[i] = want
	}
	fmt.Fprintf(&b, "\x1b[%d;%dH", row, col)
	_, _ = io.WriteString(c.term, b.String())
}

func (c *Console) redrawAll() {
	c.mu.Lock()
	c.drawn = nil
	c.mu.Unlock()
}

func (c *Console) setMessage(format string, args ...any) {
	c.mu.Lock()
	c.message = fmt.Sprintf(format, args...)
	c.mu.Unlock()
}

// header is the first two rows of every screen.
func header(st Status) []string {
	left := "deskhost: " + st.Phase
	right := st.Hostname + "  " + st.Version
	pad := width - len(left) - len(right)
	if pad < 2 {
		pad = 2
	}
	return []string{left + strings.Repeat(" ", pad) + right, strings.Repeat("-", width)}
}

func fmtDur(d time.Duration) string {
	d = d.Round(time.Second)
	h := d / time.Hour
	m := (d % time.Hour) / time.Minute
	s := (d % time.Minute) / time.Second
	if h >= 24 {
		return fmt.Sprintf("%dd%02dh", h/24, h%24)
	}
	return fmt.Sprintf("%d:%02d:%02d", h, m, s)
}

// statusFrame renders the status screen.
func statusFrame(st Status, now time.Time, unlocked bool) frame {
	f := frame(header(st))
	ws := st.WorkspacesNote
	if ws == "" {
		ws = workspaceCounts(st.Workspaces)
	}
	f = append(f,
		"Management  "+st.Management,
		"Primary     "+st.Primary,
		"Time        "+st.Time,
		"Storage     "+st.Storage,
		fmt.Sprintf("Uptime      %s   kernel %s   %d orphans reaped", fmtDur(st.Uptime), st.Kernel, st.Orphans),
		"WorkSpaces  "+ws,
	)
	if st.Fleet != "" {
		f = append(f, "Fleet       "+st.Fleet)
	}
	f = append(f,
		fmt.Sprintf("%-11s %-10s %7s %8s  %s", "Service", "State", "PID", "Restarts", "Since / last exit"),
	)
	for _, s := range st.Services {
		pid := "-"
		if s.PID > 0 {
			pid = fmt.Sprint(s.PID)
		}
		note := ""
		switch {
		case s.Why != "":
			note = s.Why
		case !s.Since.IsZero():
			note = fmtDur(now.Sub(s.Since))
			if s.LastExit != "" && s.Restarts > 0 {
				note += "  last: " + s.LastExit
			}
		}
		f = append(f, fmt.Sprintf("%-11s %-10s %7s %8d  %s", s.Name, s.State, pid, s.Restarts, note))
	}
	f = append(f, "")
	if len(st.Alarms) == 0 {
		f = append(f, "Alarms      none")
	} else {
		max := Rows - 4 - len(f)
		for i, a := range st.Alarms {
			if i >= max {
				f = append(f, fmt.Sprintf("            ... %d more", len(st.Alarms)-i))
				break
			}
			label := "            "
			if i == 0 {
				label = "Alarms      "
			}
			f = append(f, label+"! "+a)
		}
	}
	for len(f) < Rows-4 {
		f = append(f, "")
	}
	lock := "P Password  L Lock"
	if !unlocked {
		lock = "(locked)          "
	}
	f = append(f, strings.Repeat("-", width),
		"1 Network  2 Restart a service  3 Logs  4 WorkSpaces  "+lock,
		"5 Shell  6 Reboot  7 Power off  8 Factory reset  9 Hosts  Choose 1-9:")
	return f
}

func workspaceCounts(m map[string]int) string {
	if len(m) == 0 {
		return "none"
	}
	order := []string{"AVAILABLE", "PENDING", "STARTING", "REBOOTING", "STOPPING", "STOPPED", "UNHEALTHY", "ERROR", "ADMIN_MAINTENANCE", "TERMINATING"}
	seen := map[string]bool{}
	var parts []string
	total := 0
	for _, s := range order {
		if n := m[s]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
			total += n
		}
		seen[s] = true
	}
	for s, n := range m {
		if !seen[s] && n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, s))
			total += n
		}
	}
	return fmt.Sprintf("%s (total %d)", strings.Join(parts, ", "), total)
}

// ---- screens ----

func (c *Console) mainScreen(ctx context.Context) error {
	for {
		c.checkAutoLock()
		st := c.host.Status()
		f := statusFrame(st, time.Now(), c.unlocked)
		c.draw(f, Rows-1, len(f[Rows-2])+2)
		k, ok := c.next(ctx, c.refresh)
		if !ok {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue // refresh
		}
		c.setMessage("")
		switch k.r {
		case '1':
			c.management(ctx)
		case '2':
			if c.authorize(ctx, "Restart a service") {
				c.restartService(ctx)
			}
		case '3':
			c.logs(ctx)
		case '4':
			c.workspaces(ctx)
		case '9':
			c.hosts(ctx)
		case '5':
			if !c.host.ShellEnabled() {
				c.setMessage("The shell is off: the host config enables it (init.console.shell: true).")
				continue
			}
			if c.authorize(ctx, "Shell") {
				c.shell()
			}
		case '6':
			if c.authorize(ctx, "Reboot") {
				c.powerAction(ctx, "reboot", "Reboot the host? WorkSpaces stop. (y/n)", "y")
			}
		case '7':
			if c.authorize(ctx, "Power off") {
				c.powerAction(ctx, "poweroff", "Power the host off? WorkSpaces stop. (y/n)", "y")
			}
		case '8':
			if c.authorize(ctx, "Factory reset") {
				c.factoryReset(ctx)
			}
		case 'p', 'P':
			if c.authorize(ctx, "Change the console password") {
				c.changePassword(ctx)
			}
		case 'l', 'L':
			c.lock()
			c.setMessage("Locked: the console password is needed to change the host.")
		case 0x0c: // Ctrl-L
			c.redrawAll()
		}
	}
}

// pick shows a numbered list and returns the chosen index, or -1 on Esc/q. Digits
// choose at once when no longer number could match; otherwise Enter ends the number.
func (c *Console) pick(ctx context.Context, title string, items []string, hint string) int {
	page, per := 0, Rows-7
	num := ""
	for {
		f := frame(header(c.host.Status()))
		f = append(f, title, "")
		start := page * per
		for i := start; i < len(items) && i < start+per; i++ {
			f = append(f, fmt.Sprintf("%3d  %s", i+1, items[i]))
		}
		for len(f) < Rows-2 {
			f = append(f, "")
		}
		prompt := hint
		if len(items) > per {
			prompt += "n/p page  "
		}
		prompt += "q back  Number: "
		f = append(f, prompt+num)
		c.draw(f, Rows-1, len(prompt)+len(num)+1)
		k, ok := c.next(ctx, c.refresh)
		if !ok {
			if ctx.Err() != nil {
				return -1
			}
			continue // redraw the header
		}
		switch {
		case k.esc || k.r == 'q' || k.r == 3:
			return -1
		case k.r == 'n' && (page+1)*per < len(items):
			page++
		case k.r == 'p' && page > 0:
			page--
		case k.r >= '0' && k.r <= '9':
			num += string(k.r)
			n := atoi(num)
			if n >= 1 && n <= len(items) && n*10 > len(items) {
				return n - 1
			}
			if n > len(items) {
				num = ""
			}
		case k.enter && num != "":
			if n := atoi(num); n >= 1 && n <= len(items) {
				return n - 1
			}
			num = ""
		case k.backspace && num != "":
			num = num[:len(num)-1]
		case k.r == 0x0c:
			c.redrawAll()
		}
	}
}

func atoi(s string) int {
	n := 0
	for _, r := range s {
		n = n*10 + int(r-'0')
		if n > 1e6 {
			break
		}
	}
	return n
}

// ask shows lines and a prompt, and reads a line of text. ok is false on Esc.
func (c *Console) ask(ctx context.Context, lines []string, prompt, initial string) (string, bool) {
	return c.askText(ctx, lines, prompt, initial, false)
}

// askSecret is ask for a password: '*' echoes each character, and the text is not
// trimmed.
func (c *Console) askSecret(ctx context.Context, lines []string, prompt string) (string, bool) {
	return c.askText(ctx, lines, prompt, "", true)
}

func (c *Console) askText(ctx context.Context, lines []string, prompt, initial string, secret bool) (string, bool) {
	text := []rune(initial)
	for {
		st := c.host.Status()
		f := frame(header(st))
		f = append(f, lines...)
		for len(f) < Rows-2 {
			f = append(f, "")
		}
		shown := string(text)
		if secret {
			shown = strings.Repeat("*", len(text))
		}
		if max := width - len(prompt) - 1; len([]rune(shown)) > max {
			shown = string([]rune(shown)[len([]rune(shown))-max:])
		}
		f = append(f, prompt+shown)
		c.draw(f, Rows-1, len(prompt)+len([]rune(shown))+1)
		k, ok := c.next(ctx, c.refresh)
		if !ok {
			if ctx.Err() != nil {
				return "", false
			}
			continue
		}
		switch {
		case k.esc || k.r == 3:
			return "", false
		case k.enter:
			if secret {
				return string(text), true
			}
			return strings.TrimSpace(string(text)), true
		case k.backspace:
			if len(text) > 0 {
				text = text[:len(text)-1]
			}
		case k.r == 0x15: // Ctrl-U
			text = text[:0]
		case k.r >= 0x20 && k.r < 0x7f && len(text) < 200:
			text = append(text, k.r)
		}
	}
}

// confirm asks a question; the answer must be want (e.g. "y" or "RESET").
func (c *Console) confirm(ctx context.Context, lines []string, question, want string) bool {
	ans, ok := c.ask(ctx, lines, question+" ", "")
	return ok && (ans == want || (want == "y" && strings.EqualFold(ans, "yes")))
}

// wait shows lines and a "press a key" prompt.
func (c *Console) wait(ctx context.Context, lines []string) {
	st := c.host.Status()
	f := frame(header(st))
	f = append(f, lines...)
	for len(f) < Rows-2 {
		f = append(f, "")
	}
	f = append(f, "Press any key to go back.")
	c.draw(f, Rows-1, 26)
	for {
		_, ok := c.next(ctx, time.Hour)
		if ok || ctx.Err() != nil {
			return
		}
	}
}

// management is the network screen: the NICs and their roles, free to look at; setting
// the management address needs the console password.
func (c *Console) management(ctx context.Context) {
	cur, err := c.host.Management()
	now := "not configured"
	if err != nil {
		now = err.Error()
	} else if cur.DHCP {
		now = "DHCP"
	} else if cur.Address != "" {
		now = "static " + cur.Address
		if cur.Gateway != "" {
			now += " gateway " + cur.Gateway
		}
	}
	st := c.host.Status()
	lines := []string{"Network", "", "Management: " + st.Management, "Configured: " + now, "Primary:    " + st.Primary}
	if st.NetworkWriter != "" {
		lines = append(lines, "Applied by: "+st.NetworkWriter)
	}
	lines = append(lines, "", "NICs (role - the rule that chose it):")
	nics := st.NICs
	if max := Rows - 2 - 2 - len(lines) - 4; len(nics) > max {
		nics = append(nics[:max:max], fmt.Sprintf("... %d more", len(st.NICs)-max))
	}
	lines = append(lines, nics...)
	head := len(lines)
	lines = append(lines, "", "Management address:  d DHCP   s static   q back")
	mode, ok := c.ask(ctx, lines, "Choose d or s: ", "")
	if !ok {
		return
	}
	lines = lines[:head]
	var m Management
	switch strings.ToLower(mode) {
	case "d", "dhcp":
		m.DHCP = true
	case "s", "static":
		if !c.authorize(ctx, "Set the management address") {
			return
		}
		addr, ok := c.ask(ctx, append(lines[:4:4], "", "Static address with prefix length, e.g. 192.0.2.10/24"), "Address: ", cur.Address)
		if !ok || addr == "" {
			return
		}
		gw, ok := c.ask(ctx, append(lines[:4:4], "", "Address "+addr, "Default gateway (empty: none)"), "Gateway: ", cur.Gateway)
		if !ok {
			return
		}
		m.Address, m.Gateway = addr, gw
	default:
		return
	}
	if m.DHCP && !c.authorize(ctx, "Set the management address") {
		return
	}
	desc := "DHCP"
	if !m.DHCP {
		desc = "static " + m.Address
		if m.Gateway != "" {
			desc += " gateway " + m.Gateway
		}
	}
	if !c.confirm(ctx, append(lines[:4:4], "", "New: "+desc, "Clients and the admin API may lose their connection."), "Apply? (y/n)", "y") {
		c.setMessage("Management address unchanged.")
		return
	}
	c.showBusy("Applying " + desc + " ...")
	out, err := c.host.SetManagement(ctx, m)
	res := []string{"Management address", ""}
	if err != nil {
		res = append(res, "FAILED: "+err.Error())
	} else {
		res = append(res, "Applied: "+desc)
	}
	res = append(res, "")
	res = append(res, wrapLines(out, Rows-8)...)
	c.wait(ctx, res)
	if err == nil {
		c.setMessage("Management address set: %s", desc)
	}
}

// ---- the console password ----

// checkAutoLock locks the console once AutoLockIdle passed without a key.
func (c *Console) checkAutoLock() {
	c.mu.Lock()
	idle := c.autoLock
	c.mu.Unlock()
	if c.unlocked && time.Since(c.lastKey) > idle {
		c.lock()
		c.setMessage("Locked after %s without a key.", fmtDur(idle))
	}
}

func (c *Console) lock() { c.unlocked = false }

// authorize asks for the console password before an action that changes the host, and
// reports whether it may go ahead. Without a password yet, it asks for a new one.
func (c *Console) authorize(ctx context.Context, what string) bool {
	c.checkAutoLock()
	if c.unlocked {
		return true
	}
	pw := c.host.Password()
	set, err := pw.State()
	lines := []string{what, ""}
	if err != nil {
		c.wait(ctx, append(lines, "The console password cannot be used:", err.Error(), "",
			"Set init.console.passwordHash in the host config (imagebuild console-password makes one)."))
		return false
	}
	if !set {
		lines = append(lines, "This host has no console password yet. Set one now: it protects every",
			"action that changes the host, on every terminal. At least 8 characters.",
			"(Or set init.console.passwordHash in the host config.)")
		p1, ok := c.askSecret(ctx, lines, "New console password: ")
		if !ok {
			return false
		}
		p2, ok := c.askSecret(ctx, lines, "Repeat it: ")
		if !ok {
			return false
		}
		if p1 != p2 {
			c.setMessage("The two passwords differ; nothing set.")
			return false
		}
		c.showBusy("Setting the console password ...")
		if err := pw.Set(p1); err != nil {
			c.setMessage("Console password: %v", err)
			return false
		}
		c.unlocked, c.lastKey = true, time.Now()
		c.setMessage("Console password set.")
		return true
	}
	lines = append(lines, "Changing the host needs the console password.")
	p, ok := c.askSecret(ctx, lines, "Console password: ")
	if !ok {
		return false
	}
	c.showBusy("Checking ...")
	switch err := pw.Check(p); {
	case err == nil:
		c.unlocked, c.lastKey = true, time.Now()
		return true
	case errors.Is(err, ErrWrongPassword):
		c.setMessage("Wrong password.")
	default:
		c.setMessage("Console password: %v", err)
	}
	return false
}

func (c *Console) changePassword(ctx context.Context) {
	lines := []string{"Change the console password", "", "At least 8 characters."}
	p1, ok := c.askSecret(ctx, lines, "New console password: ")
	if !ok {
		return
	}
	p2, ok := c.askSecret(ctx, lines, "Repeat it: ")
	if !ok {
		return
	}
	if p1 != p2 {
		c.setMessage("The two passwords differ; unchanged.")
		return
	}
	c.showBusy("Setting the console password ...")
	if err := c.host.Password().ChangeTo(p1); err != nil {
		c.setMessage("Console password: %v", err)
		return
	}
	c.setMessage("Console password changed.")
}

func (c *Console) showBusy(msg string) {
	st := c.host.Status()
	f := frame(header(st))
	f = append(f, "", msg)
	c.draw(f, 4, len(msg)+1)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func wrapLines(s string, max int) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		for len(l) > width {
			out = append(out, l[:width])
			l = l[width:]
		}
		out = append(out, l)
	}
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return out
}

func (c *Console) serviceNames() []string {
	var names []string
	for _, s := range c.host.Status().Services {
		names = append(names, s.Name)
	}
	return names
}

func (c *Console) restartService(ctx context.Context) {
	st := c.host.Status()
	var items []string
	for _, s := range st.Services {
		items = append(items, fmt.Sprintf("%-11s %s", s.Name, s.State))
	}
	i := c.pick(ctx, "Restart a service", items, "")
	if i < 0 {
		return
	}
	name := st.Services[i].Name
	if !c.confirm(ctx, []string{"Restart a service", "", "Restart " + name + "?"}, "(y/n)", "y") {
		return
	}
	if err := c.host.RestartService(name); err != nil {
		c.setMessage("Restart %s: %v", name, err)
		return
	}
	c.setMessage("Restarting %s.", name)
}

func (c *Console) logs(ctx context.Context) {
	names := c.serviceNames()
	names = append(names, "init")
	i := c.pick(ctx, "Service logs", names, "")
	if i < 0 {
		return
	}
	c.logView(ctx, names[i])
}

// logView pages through a log: it follows new lines while at the bottom.
func (c *Console) logView(ctx context.Context, name string) {
	per := Rows - 5
	offset := 0 // lines from the bottom
	for {
		lines := c.host.ServiceLog(name)
		if offset > len(lines)-per {
			offset = len(lines) - per
		}
		if offset < 0 {
			offset = 0
		}
		end := len(lines) - offset
		start := end - per
		if start < 0 {
			start = 0
		}
		st := c.host.Status()
		f := frame(header(st))
		f = append(f, fmt.Sprintf("Log of %s: lines %d-%d of %d", name, start+1, end, len(lines)))
		for _, l := range lines[start:end] {
			f = append(f, strings.ReplaceAll(l, "\t", " "))
		}
		for len(f) < Rows-2 {
			f = append(f, "")
		}
		f = append(f, "u/d or k/j line  b/space page  g/G top/bottom  q back")
		c.draw(f, Rows-1, 1)
		k, ok := c.next(ctx, c.refresh)
		if !ok {
			if ctx.Err() != nil {
				return
			}
			continue
		}
		switch {
		case k.esc || k.r == 'q' || k.r == 3:
			return
		case k.r == 'k' || k.r == 'u' || k.up:
			offset++
		case k.r == 'j' || k.r == 'd' || k.down:
			offset--
		case k.r == 'b':
			offset += per
		case k.r == ' ':
			offset -= per
		case k.r == 'g':
			offset = len(lines)
		case k.r == 'G':
			offset = 0
		case k.r == 0x0c:
			c.redrawAll()
		}
	}
}

func (c *Console) workspaces(ctx context.Context) {
	for {
		c.showBusy("Asking hostd for the WorkSpaces ...")
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		list, err := c.host.Workspaces(wctx)
		cancel()
		if err != nil {
			c.wait(ctx, []string{"WorkSpaces", "", "hostd: " + err.Error()})
			return
		}
		if len(list) == 0 {
			c.wait(ctx, []string{"WorkSpaces", "", "No WorkSpaces on this host."})
			return
		}
		var items []string
		for _, w := range list {
			items = append(items, fmt.Sprintf("%-14s %-18s %-16s %s", w.ID, w.State, w.User, w.IP))
		}
		i := c.pick(ctx, fmt.Sprintf("WorkSpaces (%d)      ID / state / user / IP", len(list)), items, "")
		if i < 0 {
			return
		}
		w := list[i]
		lines := []string{"WorkSpace " + w.ID, "", "State:      " + w.State, "User:       " + w.User,
			"Directory:  " + w.Directory, "IP address: " + w.IP, "", "r  reboot", "s  stop", "q  back"}
		a, ok := c.ask(ctx, lines, "Choose r or s: ", "")
		if !ok {
			continue
		}
		action := map[string]string{"r": "reboot", "s": "stop"}[strings.ToLower(a)]
		if action == "" {
			continue
		}
		if !c.authorize(ctx, capitalize(action)+" "+w.ID) {
			return
		}
		if !c.confirm(ctx, lines[:6], capitalize(action)+" "+w.ID+"? (y/n)", "y") {
			continue
		}
		c.showBusy(action + " " + w.ID + " ...")
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := c.host.WorkspaceAction(actx, action, w.ID)
		cancel()
		if err != nil {
			c.wait(ctx, append([]string{"WorkSpace " + w.ID, "", action + " FAILED: " + err.Error(), ""}, wrapLines(out, 10)...))
			continue
		}
		c.setMessage("%s %s: requested", action, w.ID)
		return
	}
}

// hosts lists the fleet's hosts; a host waiting to join can be approved from here.
func (c *Console) hosts(ctx context.Context) {
	for {
		c.showBusy("Asking hostd for the fleet's hosts ...")
		hctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		list, err := c.host.Hosts(hctx)
		cancel()
		if err != nil {
			c.wait(ctx, []string{"Hosts", "", "hostd: " + err.Error()})
			return
		}
		if len(list) == 0 {
			c.wait(ctx, []string{"Hosts", "", "This host is in no fleet."})
			return
		}
		var items []string
		for _, h := range list {
			name := h.Name
			if h.This {
				name += " *"
			}
			if h.State == "joining" {
				items = append(items, fmt.Sprintf("%-14s %-8s join code %s  %s", name, h.State, h.JoinCode, h.HardwareID))
				continue
			}
			items = append(items, fmt.Sprintf("%-14s %-8s %2d/%-2d vCPU %5d/%-5d MiB %2d WS %s", name, h.State,
				h.VCPUs, h.VCPUsCap, h.MemoryMiB, h.MemoryMiBCap, h.Workspaces, h.Address))
		}
		i := c.pick(ctx, fmt.Sprintf("Hosts (%d, * this one)  state / reserved of capacity / WorkSpaces", len(list)), items, "")
		if i < 0 {
			return
		}
		h := list[i]
		lines := []string{"Host " + h.Name, "", "Id:           " + h.ID, "State:        " + h.State,
			"Hardware id:  " + h.HardwareID, "Address:      " + h.Address,
			fmt.Sprintf("Reserved:     %d of %d vCPUs, %d of %d MiB, %d WorkSpaces", h.VCPUs, h.VCPUsCap, h.MemoryMiB, h.MemoryMiBCap, h.Workspaces)}
		if h.State != "joining" {
			c.wait(ctx, lines)
			continue
		}
		lines = append(lines[:2], "Waiting to join with the code "+h.JoinCode+" (check it on that host's console).",
			"Hardware id:  "+h.HardwareID, "", "a  approve: it joins the fleet and gets its credentials", "q  back")
		a, ok := c.ask(ctx, lines, "Choose a: ", "")
		if !ok || strings.ToLower(a) != "a" {
			continue
		}
		if !c.authorize(ctx, "Approve host "+h.JoinCode) {
			return
		}
		if !c.confirm(ctx, lines[:4], "Approve "+h.JoinCode+"? (y/n)", "y") {
			continue
		}
		c.showBusy("approving " + h.JoinCode + " ...")
		actx, cancel := context.WithTimeout(ctx, time.Minute)
		out, err := c.host.ApproveHost(actx, h.JoinCode)
		cancel()
		if err != nil {
			c.wait(ctx, []string{"Host " + h.JoinCode, "", "approve FAILED: " + err.Error()})
			continue
		}
		c.setMessage("%s", out)
		return
	}
}

func (c *Console) shell() {
	// Take the terminal back from the reader, hand it to the shell, then resume.
	done := make(chan struct{})
	c.pause <- done
	<-done
	_, _ = io.WriteString(c.term, "\x1b[0m\x1b[H\x1b[2J"+
		"deskhost shell on "+c.name+": type exit (or Ctrl-D) to return to the console.\r\n")
	err := c.host.Shell(c.name)
	if c.reopen != nil {
		if t, rerr := c.reopen(); rerr != nil {
			err = fmt.Errorf("reopening %s: %w", c.name, rerr)
		} else {
			if cl, ok := c.term.(io.Closer); ok {
				cl.Close()
			}
			c.mu.Lock()
			c.term = t
			c.mu.Unlock()
		}
	}
	c.resume <- struct{}{}
	c.redrawAll()
	if err != nil {
		c.setMessage("Shell: %v", err)
	}
}

func (c *Console) powerAction(ctx context.Context, action, question, want string) {
	if !c.confirm(ctx, []string{capitalize(action), ""}, question, want) {
		return
	}
	c.showBusy("deskhost: " + action + " requested; stopping services ...")
	if err := c.host.Power(action); err != nil {
		c.setMessage("%s: %v", action, err)
	}
}

func (c *Console) factoryReset(ctx context.Context) {
	lines := []string{"Factory reset", "",
		"This erases /perm: every WorkSpace, volume, image, log and the console's",
		"settings on this host, then reboots. The host config in the image stays.", "",
		"Type RESET (capitals) and Enter to confirm; anything else cancels."}
	if !c.confirm(ctx, lines, "Confirm:", "RESET") {
		c.setMessage("Factory reset cancelled.")
		return
	}
	c.showBusy("deskhost: factory reset: stopping services, erasing /perm ...")
	if err := c.host.Power("factory-reset"); err != nil {
		c.setMessage("Factory reset: %v", err)
	}
}

// ---- input ----

type key struct {
	r                     rune
	enter, backspace, esc bool
	up, down, left, right bool
}

// next waits up to d for a key; ok is false on timeout or when ctx ends.
func (c *Console) next(ctx context.Context, d time.Duration) (key, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case k := <-c.keys:
		c.lastKey = time.Now()
		return k, true
	case <-t.C:
		return key{}, false
	case <-ctx.Done():
		return key{}, false
	}
}

// readLoop turns bytes into keys. An ESC followed within 50 ms by '[' or 'O' starts an
// arrow-key sequence; alone it is the Esc key.
func (c *Console) readLoop(ctx context.Context) {
	buf := make([]byte, 64)
	var pending []byte
	for ctx.Err() == nil {
		select {
		case done := <-c.pause:
			close(done)
			<-c.resume
			pending = nil
			continue
		default:
		}
		deadline := time.Now().Add(200 * time.Millisecond)
		if len(pending) > 0 {
			deadline = time.Now().Add(50 * time.Millisecond)
		}
		_ = c.term.SetReadDeadline(deadline)
		n, err := c.term.Read(buf)
		if n > 0 {
			pending = append(pending, buf[:n]...)
		}
		if err != nil && n == 0 && !os.IsTimeout(err) {
			time.Sleep(200 * time.Millisecond) // a hung-up line or no deadlines: do not spin
		}
		timedOut := n == 0
		for len(pending) > 0 {
			k, used := decode(pending, timedOut)
			if used == 0 {
				break
			}
			pending = pending[used:]
			if k != nil {
				select {
				case c.keys <- *k:
				default: // typing far ahead of the screen: drop
				}
			}
		}
	}
}

// decode reads one key from b; used is 0 when more bytes are needed (an incomplete
// escape sequence and no timeout yet).
func decode(b []byte, timedOut bool) (*key, int) {
	switch b[0] {
	case '\r':
		if len(b) > 1 && (b[1] == '\n' || b[1] == 0) {
			return &key{enter: true}, 2
		}
		return &key{enter: true}, 1
	case '\n':
		return &key{enter: true}, 1
	case 0x7f, 0x08:
		return &key{backspace: true}, 1
	case 0x1b:
		if len(b) == 1 {
			if timedOut {
				return &key{esc: true}, 1
			}
			return nil, 0
		}
		if b[1] != '[' && b[1] != 'O' {
			return &key{esc: true}, 1
		}
		// CSI: parameters then a final byte in 0x40-0x7e.
		for i := 2; i < len(b); i++ {
			if b[i] >= 0x40 && b[i] <= 0x7e {
				k := &key{}
				switch b[i] {
				case 'A':
					k.up = true
				case 'B':
					k.down = true
				case 'C':
					k.right = true
				case 'D':
					k.left = true
				default:
					k = nil // other keys (F1, Home) are ignored
				}
				return k, i + 1
			}
		}
		if timedOut {
			return &key{esc: true}, 1
		}
		return nil, 0
	}
	r := rune(b[0])
	if b[0] >= 0x80 {
		return nil, 1 // no UTF-8 input on a VT100
	}
	return &key{r: r}, 1
}
