package console

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/internal/vt100"
)

// fakeHost records what the console asked for.
type fakeHost struct {
	mu       sync.Mutex
	restarts []string
	mgmt     Management
	mgmtSets int
	actions  []string
	power    []string
	shells   int
	logs     []string
	shellOn  bool
	password *Password
	fleet    string   // the status screen's Fleet line
	approved []string // join codes approved
}

func (h *fakeHost) ShellEnabled() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.shellOn
}

func (h *fakeHost) Password() *Password { return h.password }

// changes counts what the console did to the host.
func (h *fakeHost) changes() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.restarts) + h.mgmtSets + len(h.actions) + len(h.power) + h.shells + len(h.approved)
}

func (h *fakeHost) Status() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	addr := "eth0 10.0.2.15/24 gw 10.0.2.2 (dhcp)"
	if !h.mgmt.DHCP && h.mgmt.Address != "" {
		addr = "eth0 " + h.mgmt.Address + " (static)"
	}
	return Status{Phase: "ready", Hostname: "host-1", Version: "0.4+gabc", Kernel: "6.1.0",
		Management: addr, Primary: "br-primary 10.0.3.15/24 (dhcp, uplink eth1)",
		Time: "2026-01-01 00:00:00 UTC ntp", Storage: "/perm on /dev/vda2", NetworkWriter: "hostd",
		NICs: []string{"eth0 52:54:00:aa:00:00: primary - the first other NIC with carrier",
			"eth1 52:54:00:aa:00:01: management - network-booted from it (BOOTIF)"},
		Services:   []ServiceInfo{{Name: "netcfg", State: "running", PID: 10}, {Name: "hostd", State: "running", PID: 42, Restarts: len(h.restarts)}},
		Workspaces: map[string]int{"AVAILABLE": 2, "STOPPED": 1}, Fleet: h.fleet,
		Alarms: []string{"init_on_free off: freed guest memory is not zeroed by the kernel"}}
}

func (h *fakeHost) ServiceLog(name string) []string {
	var out []string
	for i := 1; i <= 50; i++ {
		out = append(out, fmt.Sprintf("%s line %d", name, i))
	}
	return out
}

func (h *fakeHost) RestartService(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.restarts = append(h.restarts, name)
	return nil
}

func (h *fakeHost) Workspaces(context.Context) ([]Workspace, error) {
	return []Workspace{{ID: "ws-aaaaaaaaa", State: "AVAILABLE", User: "alice", IP: "198.19.0.5"},
		{ID: "ws-bbbbbbbbb", State: "STOPPED", User: "bob"}}, nil
}

func (h *fakeHost) WorkspaceAction(_ context.Context, action, id string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.actions = append(h.actions, action+" "+id)
	return "ok", nil
}

func (h *fakeHost) Hosts(context.Context) ([]FleetHost, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	list := []FleetHost{
		{ID: "host-aaaaaaaaaa", Name: "rack1-a", State: "ready", This: true, Address: "10.0.0.1:7443", HardwareID: "dmi-uuid:1111",
			VCPUs: 4, VCPUsCap: 16, MemoryMiB: 8192, MemoryMiBCap: 61440, Workspaces: 2},
		{ID: "host-bbbbbbbbbb", Name: "rack1-b", State: "down", Address: "10.0.0.2:7443", HardwareID: "dmi-uuid:2222", VCPUsCap: 16, MemoryMiBCap: 61440},
	}
	if len(h.approved) == 0 {
		list = append(list, FleetHost{Name: "rack1-c", State: "joining", JoinCode: "ABCD-EFGH-JKLM", HardwareID: "mac:52:54:00:00:00:03"})
	}
	return list, nil
}

func (h *fakeHost) ApproveHost(_ context.Context, code string) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.approved = append(h.approved, code)
	return "host-cccccccccc approved", nil
}

func (h *fakeHost) Management() (Management, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.mgmt, nil
}

func (h *fakeHost) SetManagement(_ context.Context, m Management) (string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.mgmt = m
	h.mgmtSets++
	return "applied in 12ms", nil
}

func (h *fakeHost) Shell(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.shells++
	return nil
}

func (h *fakeHost) Power(action string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.power = append(h.power, action)
	return nil
}

// term is the console's end of a pair of pipes; the test types into the other end and
// reads the output onto a vt100 screen.
type rig struct {
	t       *testing.T
	host    *fakeHost
	screen  *vt100.Screen
	keys    *os.File
	raw     strings.Builder
	mu      sync.Mutex
	console *Console
}

type pipeTerm struct {
	r *os.File
	w *os.File
}

func (p pipeTerm) Read(b []byte) (int, error)        { return p.r.Read(b) }
func (p pipeTerm) Write(b []byte) (int, error)       { return p.w.Write(b) }
func (p pipeTerm) SetReadDeadline(t time.Time) error { return p.r.SetReadDeadline(t) }

// testPassword is the console password of the rig's host once set.
const testPassword = "correct horse"

func newRig(t *testing.T) *rig {
	inR, inW, _ := os.Pipe()
	outR, outW, _ := os.Pipe()
	pw := &Password{File: filepath.Join(t.TempDir(), "console-password"), Sleep: func(time.Duration) {}}
	r := &rig{t: t, host: &fakeHost{mgmt: Management{DHCP: true}, password: pw}, screen: vt100.New(Rows, Cols), keys: inW}
	c := New(pipeTerm{inR, outW}, r.host, "ttyS0")
	c.refresh = 50 * time.Millisecond
	r.console = c
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := outR.Read(buf)
			r.screen.Write(buf[:n])
			r.mu.Lock()
			r.raw.Write(buf[:n])
			r.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); inW.Close(); outW.Close() })
	return r
}

func (r *rig) typ(s string) {
	r.t.Helper()
	for i := 0; i < len(s); i++ {
		r.keys.Write([]byte{s[i]})
		time.Sleep(5 * time.Millisecond)
	}
}

func (r *rig) want(what string) {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !r.screen.Contains(what) {
		if time.Now().After(deadline) {
			r.t.Fatalf("screen never showed %q:\n%s", what, r.screen)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setPassword sets the console password through the first-use prompt of an action.
func (r *rig) setPassword() {
	r.t.Helper()
	if err := r.host.password.Set(testPassword); err != nil {
		r.t.Fatal(err)
	}
}

// unlock answers the password prompt an action brought up.
func (r *rig) unlock() {
	r.t.Helper()
	r.want("Console password:")
	r.typ(testPassword + "\r")
}

func TestStatusScreenFits80x24(t *testing.T) {
	r := newRig(t)
	r.want("deskhost: ready")
	r.want("Management  eth0 10.0.2.15/24 gw 10.0.2.2 (dhcp)")
	r.want("2 AVAILABLE, 1 STOPPED (total 3)")
	r.want("! init_on_free off")
	r.want("Choose 1-9:")
	r.mu.Lock()
	raw := r.raw.String()
	r.mu.Unlock()
	// Only the VT100 subset: CUP, EL, ED, SGR reset; never the 80th column.
	for _, l := range r.screen.Lines() {
		if len(l) > 79 {
			t.Errorf("row longer than 79 columns: %q", l)
		}
	}
	for _, seq := range []string{"\x1b[?", "\x1b]", "\x1b(", "\x1b[38"} {
		if strings.Contains(raw, seq) {
			t.Errorf("output uses %q, which a VT100 does not know", seq)
		}
	}
}

func TestRestartService(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("2")
	r.unlock()
	r.want("Restart a service")
	r.want("2  hostd")
	r.typ("2")
	r.want("Restart hostd?")
	r.typ("n\r")
	r.want("Choose 1-9:")
	r.typ("22y\r")
	r.want("Restarting hostd.")
	if len(r.host.restarts) != 1 || r.host.restarts[0] != "hostd" {
		t.Errorf("restarts: %v", r.host.restarts)
	}
}

func TestManagementStatic(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("1")
	// The network screen: free to look at, with each NIC's role and rule.
	r.want("Configured: DHCP")
	r.want("eth1 52:54:00:aa:00:01: management - network-booted from it (BOOTIF)")
	r.want("Applied by: hostd")
	r.typ("s\r")
	r.unlock()
	r.want("Address:")
	r.typ("10.0.2.99/2\x7f24\r") // with a typo fixed by Backspace
	r.want("Gateway:")
	r.typ("10.0.2.2\r")
	r.want("New: static 10.0.2.99/24 gateway 10.0.2.2")
	r.typ("y\r")
	r.want("Applied: static 10.0.2.99/24 gateway 10.0.2.2")
	r.typ(" ")
	r.want("eth0 10.0.2.99/24 (static)")
	if m, _ := r.host.Management(); m.DHCP || m.Address != "10.0.2.99/24" || m.Gateway != "10.0.2.2" {
		t.Errorf("management set to %+v", m)
	}
	// Esc backs out without a change.
	r.typ("1")
	r.want("Choose d or s:")
	r.typ("\x1b")
	r.want("Choose 1-9:")
}

func TestWorkspaceStop(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("4")
	r.want("ws-bbbbbbbbb")
	r.typ("2")
	r.want("Choose r or s:")
	r.typ("s\r")
	r.unlock()
	r.want("Stop ws-bbbbbbbbb? (y/n)")
	r.typ("y\r")
	r.want("stop ws-bbbbbbbbb: requested")
	if len(r.host.actions) != 1 || r.host.actions[0] != "stop ws-bbbbbbbbb" {
		t.Errorf("actions: %v", r.host.actions)
	}
}

func TestLogsPaging(t *testing.T) {
	r := newRig(t)
	r.want("Choose 1-9:")
	r.typ("3")
	r.want("3  init")
	r.typ("2")
	r.want("hostd line 50")
	r.typ("b")
	r.want("lines 13-31 of 50")
	r.typ("g")
	r.want("hostd line 1")
	r.typ("q")
	r.want("Choose 1-9:")
}

func TestFactoryResetNeedsTypedConfirmation(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("8")
	r.unlock()
	r.want("Type RESET")
	r.typ("reset\r")
	r.want("Factory reset cancelled.")
	if len(r.host.power) != 0 {
		t.Fatalf("power actions after a wrong confirmation: %v", r.host.power)
	}
	r.typ("8")
	r.want("Type RESET")
	r.typ("RESET\r")
	deadline := time.Now().Add(5 * time.Second)
	for {
		r.host.mu.Lock()
		n := len(r.host.power)
		r.host.mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(r.host.power) != 1 || r.host.power[0] != "factory-reset" {
		t.Errorf("power actions: %v", r.host.power)
	}
}

func TestRebootAndShell(t *testing.T) {
	r := newRig(t)
	r.host.shellOn = true
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("6")
	r.unlock()
	r.want("Reboot the host?")
	r.typ("n\r")
	r.want("Choose 1-9:")
	r.typ("5") // unlocked: no second prompt
	deadline := time.Now().Add(5 * time.Second)
	for r.host.changes() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.want("Choose 1-9:")
	if r.host.shells != 1 || len(r.host.power) != 0 {
		t.Errorf("shells %d, power %v", r.host.shells, r.host.power)
	}
}

// The shell is off unless the config enables it; with it on, 5 asks for the password,
// a wrong one opens nothing, and five wrong ones lock guessing out.
func TestShellNeedsPassword(t *testing.T) {
	r := newRig(t)
	r.want("Choose 1-9:")
	r.typ("5")
	r.want("The shell is off")
	r.host.mu.Lock()
	r.host.shellOn = true
	r.host.mu.Unlock()
	// No password yet: the first protected action sets one; two that differ set none.
	r.typ("5")
	r.want("no console password yet")
	r.typ("short-one\r")
	r.want("Repeat it:")
	r.typ("other-one\r")
	r.want("The two passwords differ")
	if set, _ := r.host.password.State(); set || r.host.changes() != 0 {
		t.Fatalf("a password was set from two different ones, or the shell opened (%d changes)", r.host.changes())
	}
	r.typ("5")
	r.want("New console password:")
	r.typ(testPassword + "\r")
	r.want("Repeat it:")
	r.typ(testPassword + "\r")
	r.want("Console password set.")
	if r.host.shells != 1 {
		t.Fatalf("shells %d after setting the password", r.host.shells)
	}
	if st, err := os.Stat(r.host.password.File); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("password file: %v %v", st, err)
	}
	if b, _ := os.ReadFile(r.host.password.File); strings.Contains(string(b), testPassword) || !strings.HasPrefix(string(b), "$argon2id$") {
		t.Errorf("the password file holds %q, want an argon2id hash", b)
	}
	// Locked again: the masked prompt, and a wrong password opens nothing.
	r.typ("L")
	r.want("(locked)")
	r.typ("5")
	r.want("Console password:")
	r.typ("wrong-password")
	r.want("Console password: **************")
	if r.screen.Contains("wrong-password") {
		t.Error("the password echoed")
	}
	r.typ("\r")
	r.want("Wrong password.")
	if r.host.shells != 1 {
		t.Fatalf("a wrong password opened the shell")
	}
	for i := 0; i < MaxFailures-1; i++ {
		r.typ("5")
		r.want("Console password:")
		r.typ(fmt.Sprintf("wrong-%d\r", i))
		r.want("Choose 1-9:")
	}
	r.typ("5")
	r.want("Console password:")
	r.typ(testPassword + "\r")
	r.want("wrong passwords in a row: try again in")
	if r.host.shells != 1 {
		t.Fatal("the right password worked during the lockout")
	}
	if r.host.changes() != 1 {
		t.Errorf("changes %d, want only the first shell", r.host.changes())
	}
}

// Every action that changes the host asks for the password; looking does not.
func TestLockedConsoleChangesNothing(t *testing.T) {
	r := newRig(t)
	r.host.shellOn = true
	r.setPassword()
	r.want("Choose 1-9:")
	for _, k := range []string{"2", "5", "6", "7", "8", "P"} {
		r.typ(k)
		r.want("Console password:")
		r.typ("\x1b")
		r.want("Choose 1-9:")
	}
	r.typ("1")
	r.want("Choose d or s:")
	r.typ("d\r")
	r.want("Console password:")
	r.typ("\x1b")
	r.typ("4")
	r.want("ws-aaaaaaaaa")
	r.typ("1")
	r.want("Choose r or s:")
	r.typ("r\r")
	r.want("Console password:")
	r.typ("\x1b")
	r.typ("q")
	r.typ("3") // logs: no password
	r.want("3  init")
	r.typ("q")
	r.want("Choose 1-9:")
	if n := r.host.changes(); n != 0 {
		t.Errorf("%d changes without the password", n)
	}
}

// The console locks itself after AutoLockIdle without a key.
func TestAutoLock(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("6")
	r.unlock()
	r.want("Reboot the host?")
	r.typ("n\r")
	r.want("P Password  L Lock")
	r.console.mu.Lock()
	r.console.autoLock = 100 * time.Millisecond
	r.console.mu.Unlock()
	r.want("(locked)")
	r.want("Locked after")
}

func TestDecodeKeys(t *testing.T) {
	for _, tc := range []struct {
		in       string
		timedOut bool
		want     key
		used     int
	}{
		{"\r\n", false, key{enter: true}, 2},
		{"\x7f", false, key{backspace: true}, 1},
		{"\x1b[A", false, key{up: true}, 3},
		{"\x1bOB", false, key{down: true}, 3},
		{"\x1b", true, key{esc: true}, 1},
		{"q", false, key{r: 'q'}, 1},
	} {
		k, used := decode([]byte(tc.in), tc.timedOut)
		if used != tc.used || k == nil || *k != tc.want {
			t.Errorf("%q: %+v %d", tc.in, k, used)
		}
	}
	if k, used := decode([]byte("\x1b["), false); k != nil || used != 0 {
		t.Errorf("an incomplete sequence was decoded: %+v %d", k, used)
	}
}

func TestStatusShowsJoinCode(t *testing.T) {
	r := newRig(t)
	r.host.mu.Lock()
	r.host.fleet = "join code ABCD-EFGH-JKLM: approve on a fleet host (9 Hosts, or hostd hosts approve)"
	r.host.mu.Unlock()
	r.want("Fleet       join code ABCD-EFGH-JKLM: approve on a fleet host")
	r.want("9 Hosts  Choose 1-9:")
	for _, l := range r.screen.Lines() {
		if len(l) > 79 {
			t.Errorf("row longer than 79 columns: %q", l)
		}
	}
}

// TestHostsApprove: the host list needs no password; approving a joining host does, and
// a locked console approves nothing.
func TestHostsApprove(t *testing.T) {
	r := newRig(t)
	r.setPassword()
	r.want("Choose 1-9:")
	r.typ("9")
	r.want("rack1-a *")
	r.want("4/16 vCPU")
	r.want("join code ABCD-EFGH-JKLM")
	r.typ("3")
	r.want("Choose a:")
	r.typ("a\r")
	r.want("Console password:")
	r.typ("wrong\r")
	r.want("Choose 1-9:") // refused: back to the status screen
	if r.host.changes() != 0 {
		t.Fatalf("a wrong password approved: %v", r.host.approved)
	}
	r.typ("9")
	r.want("join code ABCD-EFGH-JKLM")
	r.typ("3")
	r.want("Choose a:")
	r.typ("a\r")
	r.unlock()
	r.want("Approve ABCD-EFGH-JKLM? (y/n)")
	r.typ("y\r")
	r.want("host-cccccccccc approved")
	if len(r.host.approved) != 1 || r.host.approved[0] != "ABCD-EFGH-JKLM" {
		t.Errorf("approved: %v", r.host.approved)
	}
}
