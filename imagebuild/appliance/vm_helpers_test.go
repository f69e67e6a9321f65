package appliance_test

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"deskhost/internal/imagelayout"
	"deskhost/internal/vt100"
)

// vm is a qemu guest (TCG) whose first serial port is a unix socket the test reads, as
// an operator's VT100 would: every byte goes into a log and onto an 80×24 screen.
type vm struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	conn    net.Conn
	started time.Time

	mu     sync.Mutex
	raw    []byte
	screen *vt100.Screen
	more   chan struct{} // poked on new output
	done   chan struct{} // qemu exited
	err    error
}

// startVM runs qemu with args plus a serial socket, and connects to it before the guest
// runs (wait=on), so nothing the guest prints is lost.
func startVM(t testing.TB, name string, args []string) *vm {
	t.Helper()
	return startVMIn(t, name, "", args)
}

// startVMIn is startVM with qemu in the network namespace netns ("": the test's own), where
// its tap NICs are.
func startVMIn(t testing.TB, name, netns string, args []string) *vm {
	t.Helper()
	dir := t.TempDir()
	sock := filepath.Join(dir, "serial.sock")
	all := append([]string{"-accel", "tcg", "-display", "none", "-monitor", "none",
		"-serial", "unix:" + sock + ",server=on,wait=on"}, args...)
	cmd := exec.Command("qemu-system-x86_64", all...)
	if netns != "" {
		cmd = exec.Command("ip", append([]string{"netns", "exec", netns, "qemu-system-x86_64"}, all...)...) // ip execs qemu: same process
	}
	// A test binary that dies (a -timeout panic) takes its guests with it; t.Cleanup
	// would not run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	v := &vm{t: t, name: name, cmd: cmd, screen: vt100.New(24, 80), more: make(chan struct{}, 1), done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: starting qemu: %v", name, err)
	}
	v.started = time.Now()
	go func() {
		v.err = cmd.Wait()
		if v.err != nil {
			v.err = fmt.Errorf("%v: %s", v.err, strings.TrimSpace(stderr.String()))
		}
		close(v.done)
	}()
	var conn net.Conn
	for i := 0; ; i++ {
		c, err := net.Dial("unix", sock)
		if err == nil {
			conn = c
			break
		}
		select {
		case <-v.done:
			t.Fatalf("%s: qemu exited: %v", name, v.err)
		case <-time.After(50 * time.Millisecond):
		}
		if i > 400 {
			t.Fatalf("%s: no serial socket: %v", name, err)
		}
	}
	v.conn = conn
	go func() {
		buf := make([]byte, 8192)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				v.mu.Lock()
				v.raw = append(v.raw, buf[:n]...)
				v.mu.Unlock()
				v.screen.Write(buf[:n])
				select {
				case v.more <- struct{}{}:
				default:
				}
			}
			if err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-v.done
		conn.Close()
		if t.Failed() {
			t.Logf("%s: serial console (last 6000 bytes, escapes stripped):\n%s", name, v.tail(6000))
			t.Logf("%s: screen:\n%s", name, v.screen)
		}
	})
	return v
}

var escRe = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

func (v *vm) tail(n int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	b := v.raw
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return escRe.ReplaceAllString(string(b), "\n")
}

// mark is the current end of the output.
func (v *vm) mark() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.raw)
}

// text returns the output from offset from, escape sequences stripped.
func (v *vm) text(from int) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return escRe.ReplaceAllString(string(v.raw[from:]), "\n")
}

// waitFor waits for s in the output after offset from; it returns the offset after it
// and the time since qemu started.
func (v *vm) waitFor(from int, s string, timeout time.Duration) (int, time.Duration) {
	v.t.Helper()
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		i := bytes.Index(v.raw[from:], []byte(s))
		v.mu.Unlock()
		if i >= 0 {
			return from + i + len(s), time.Since(v.started)
		}
		select {
		case <-v.more:
		case <-v.done:
			v.t.Fatalf("%s: qemu exited (%v) before %q appeared", v.name, v.err, s)
		case <-deadline:
			v.t.Fatalf("%s: %q did not appear within %v", v.name, s, timeout)
		}
	}
}

// waitQuietly is waitFor that reports a timeout instead of failing, so the caller can
// look inside the guest first.
func (v *vm) waitQuietly(from int, s string, timeout time.Duration) (time.Duration, bool) {
	deadline := time.After(timeout)
	for {
		v.mu.Lock()
		i := bytes.Index(v.raw[from:], []byte(s))
		v.mu.Unlock()
		if i >= 0 {
			return time.Since(v.started), true
		}
		select {
		case <-v.more:
		case <-v.done:
			return 0, false
		case <-deadline:
			return 0, false
		}
	}
}

// waitReady waits for the ready line; if it does not come, the test fails with what the
// guest's own logs say (hostd's, init's) and its network, read through the console's
// shell.
func (v *vm) waitReady(from int, timeout time.Duration) time.Duration {
	v.t.Helper()
	d, ok := v.waitQuietly(from, imagelayout.ReadyLine, timeout)
	if ok {
		return d
	}
	select {
	case <-v.done:
		v.t.Fatalf("%s: qemu exited (%v) before %q appeared", v.name, v.err, imagelayout.ReadyLine)
	default:
	}
	out := v.shell("tail -n 40 /perm/log/hostd.log", "tail -n 20 /perm/log/zeroclient.log", "tail -n 30 /perm/log/init.log", "ip -4 -o addr; ip route",
		"tail -n 30 /perm/log/libvirtd.log", processes)
	v.t.Fatalf("%s: %q did not appear within %s\nhostd.log:\n%s\nzeroclient.log:\n%s\ninit.log:\n%s\nnetwork:\n%s\nlibvirtd.log:\n%s\nprocesses:\n%s",
		v.name, imagelayout.ReadyLine, timeout, out[0], out[1], out[2], out[3], out[4], out[5])
	return 0
}

// waitScreen waits until the screen satisfies ok.
func (v *vm) waitScreen(what string, timeout time.Duration, ok func(*vt100.Screen) bool) {
	v.t.Helper()
	deadline := time.After(timeout)
	for !ok(v.screen) {
		select {
		case <-v.more:
		case <-time.After(200 * time.Millisecond):
		case <-v.done:
			v.t.Fatalf("%s: qemu exited (%v) waiting for %s", v.name, v.err, what)
		case <-deadline:
			v.t.Fatalf("%s: screen never showed %s; it shows:\n%s", v.name, what, v.screen)
		}
	}
}

// send types s on the serial line, a byte at a time as a person's terminal would.
func (v *vm) send(s string) {
	v.t.Helper()
	for i := 0; i < len(s); i++ {
		if _, err := v.conn.Write([]byte{s[i]}); err != nil {
			v.t.Fatalf("%s: typing: %v", v.name, err)
		}
		time.Sleep(15 * time.Millisecond)
	}
}

// vmPassword is the console password the tests set on a host's first protected action.
const vmPassword = "deskhost-vm-console"

// promptRow is the console's input row.
func promptRow(s *vt100.Screen) string {
	l := s.Lines()
	if len(l) < 23 {
		return ""
	}
	return l[22]
}

// authorized waits until the screen satisfies ok, answering the console password prompts
// a protected action brings up on the way: a new password on the host's first one, the
// password when the console is locked.
func (v *vm) authorized(what string, timeout time.Duration, ok func(*vt100.Screen) bool) {
	v.t.Helper()
	deadline := time.Now().Add(timeout)
	answered := ""
	for !ok(v.screen) {
		row := promptRow(v.screen)
		for _, p := range []string{"New console password:", "Repeat it:", "Console password:"} {
			if strings.HasPrefix(row, p) && strings.TrimSpace(row) == p && answered != p {
				v.send(vmPassword + "\r")
				answered = p
			}
		}
		if !strings.HasPrefix(row, answered) {
			answered = ""
		}
		select {
		case <-v.more:
		case <-time.After(200 * time.Millisecond):
		case <-v.done:
			v.t.Fatalf("%s: qemu exited (%v) waiting for %s", v.name, v.err, what)
		}
		if time.Now().After(deadline) {
			v.t.Fatalf("%s: screen never showed %s; it shows:\n%s", v.name, what, v.screen)
		}
	}
}

// networkScreen opens the console's network screen (menu 1, no password) and checks it
// shows each line, then goes back.
func (v *vm) networkScreen(lines ...string) {
	v.t.Helper()
	v.waitScreen("the status screen", time.Minute, func(s *vt100.Screen) bool { return s.Contains("Choose 1-9:") })
	v.send("1")
	v.waitScreen("the network screen", 30*time.Second, func(s *vt100.Screen) bool { return s.Contains("Choose d or s:") })
	for _, l := range lines {
		if !v.screen.Contains(l) {
			v.t.Errorf("%s: the network screen lacks %q:\n%s", v.name, l, v.screen)
		}
	}
	v.t.Logf("%s: network screen:\n%s", v.name, v.screen)
	v.send("\x1b")
	v.waitScreen("the status screen", 30*time.Second, func(s *vt100.Screen) bool { return s.Contains("Choose 1-9:") })
}

// shell opens the console's shell (menu 5; the console password when asked), runs each
// command and returns its output, then leaves the shell. Each command's end is found by
// a marker the typed line does not contain literally.
func (v *vm) shell(cmds ...string) []string {
	v.t.Helper()
	v.waitScreen("the status screen", time.Minute, func(s *vt100.Screen) bool { return s.Contains("Choose 1-9:") })
	m := v.mark()
	v.send("5")
	v.authorized("the shell", time.Minute, func(*vt100.Screen) bool {
		v.mu.Lock()
		defer v.mu.Unlock()
		return bytes.Contains(v.raw[m:], []byte("deskhost shell on"))
	})
	m, _ = v.waitFor(m, "# ", time.Minute) // the prompt (PS1 '\h:\w# ')
	var outs []string
	for i, c := range cmds {
		end := fmt.Sprintf("__END%d__", i)
		v.send(fmt.Sprintf("%s; echo \"__END\"\"%d__ rc=$?\"\r", c, i))
		// Skip the echo of the typed line, then read to the marker.
		m, _ = v.waitFor(m, "\n", 30*time.Second)
		e, _ := v.waitFor(m, end, 3*time.Minute)
		out := v.text(m)
		out = out[:strings.Index(out, end)]
		outs = append(outs, strings.ReplaceAll(out, "\r", ""))
		m = e
	}
	v.send("exit\r")
	v.waitScreen("the status screen after the shell", time.Minute, func(s *vt100.Screen) bool { return s.Contains("Choose 1-9:") })
	return outs
}

func needTool(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing(t, tool+" is not installed (scripts/install-deps.sh installs scripts/packages/*.txt)")
		}
	}
}

func needFile(t testing.TB, files ...string) {
	t.Helper()
	for _, f := range files {
		if _, err := os.Stat(f); err != nil {
			missing(t, f+" is missing (scripts/install-deps.sh installs scripts/packages/appliance.txt)")
		}
	}
}

// processes lists the guest's processes with their state and where the kernel has them
// wait, and /dev/kvm: what a stuck service is doing.
const processes = `ls -l /dev/kvm; for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline); [ -n "$c" ] && echo "${p#/proc/} $(cut -d' ' -f3 $p/stat) $(cat $p/wchan) $c"; done`
