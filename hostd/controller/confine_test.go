package controller

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/hostd/confine"
	"deskhost/hostd/virt"
)

// dialIfChild makes this test binary double as a client of a unix socket: with
// CONTROLLER_TEST_DIAL set it connects to that socket, prints what the server says first
// (an RFB banner on a VNC socket) and exits, so that tests can try a WorkSpace's sockets as
// an unprivileged user.
func dialIfChild() {
	sock := os.Getenv("CONTROLLER_TEST_DIAL")
	if sock == "" {
		return
	}
	c, err := net.DialTimeout("unix", sock, 5*time.Second)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(1)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 12)
	if _, err := io.ReadFull(c, b); err != nil {
		fmt.Println("read:", err)
		os.Exit(1)
	}
	fmt.Printf("%q\n", b)
	os.Exit(0)
}

// removeDialer removes the world-readable copy of this binary dialAs made, if any.
func removeDialer() {
	if dialer != "" {
		os.RemoveAll(filepath.Dir(dialer))
	}
}

// dialAs connects to sock as uid:gid (no supplementary groups) and returns the server's
// first bytes, or the error.
func dialAs(t *testing.T, sock string, uid, gid int) (string, error) {
	t.Helper()
	dialerOnce.Do(func() { dialer, dialerErr = publicCopy(os.Args[0]) })
	if dialerErr != nil {
		t.Fatal(dialerErr)
	}
	cmd := exec.Command(dialer, "-test.run=^$")
	cmd.Env = append(os.Environ(), "CONTROLLER_TEST_DIAL="+sock)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out)), nil
}

var (
	dialerOnce sync.Once
	dialer     string
	dialerErr  error
)

// publicCopy copies the test binary where any user may run it (go test builds it in a
// directory only root can enter).
func publicCopy(bin string) (string, error) {
	dir, err := os.MkdirTemp("", "dh-dial")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, "dial")
	return p, os.WriteFile(p, b, 0o755)
}

// statusFields reads /proc/pid/status into a map of its lines.
func statusFields(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

func owner(t *testing.T, path string) (uid, gid int, mode os.FileMode) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid), int(st.Gid), os.FileMode(st.Mode & 0o7777)
}

// checkConfined checks, from /proc and the file system, how the running guest's qemu is
// confined: its uid and gid, no capabilities, the WorkSpace's own files handed to it and
// the shared image files not, the display open to the display group only, the guest agent
// to root only, RAM on huge pages, and — where the host offers cgroup v2 — its limits.
func checkConfined(t *testing.T, h *harness, id string) {
	t.Helper()
	p := h.ctl.cfg.Confine
	pid := qemuPID(t, id)
	st := statusFields(t, pid)
	want := fmt.Sprintf("%d %d %d %d", p.UID, p.UID, p.UID, p.UID)
	if st["Uid"] != want || st["Gid"] != fmt.Sprintf("%d %d %d %d", p.GID, p.GID, p.GID, p.GID) {
		t.Errorf("qemu %d runs as Uid %q Gid %q, want uid %d gid %d (libvirt-qemu)", pid, st["Uid"], st["Gid"], p.UID, p.GID)
	}
	if st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
		t.Errorf("qemu %d has capabilities: CapEff %s CapPrm %s", pid, st["CapEff"], st["CapPrm"])
	}
	for _, v := range h.ctl.volumePaths(id) {
		if uid, _, mode := owner(t, v); uid != p.UID || mode != 0o600 {
			t.Errorf("volume %s: owner %d mode %o while the guest runs, want qemu's (%d) and 0600", v, uid, mode, p.UID)
		}
	}
	img, err := h.ctl.cfg.Images.ImageFiles(testImage)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{img.Kernel, img.Initrd, img.Root} {
		if uid, _, mode := owner(t, f); uid != 0 || mode&0o022 != 0 {
			t.Errorf("shared image file %s: owner %d mode %o; it must stay root's and unwritable by qemu", f, uid, mode)
		}
	}
	if uid, gid, mode := owner(t, h.ctl.runDir(id)); uid != p.UID || gid != p.DisplayGID || mode != 0o750 {
		t.Errorf("runtime directory: %d:%d %o, want %d:%d 0750", uid, gid, mode, p.UID, p.DisplayGID)
	}
	if _, gid, mode := owner(t, h.ctl.VNCSocket(id)); gid != p.DisplayGID || mode != 0o660 {
		t.Errorf("VNC socket: group %d mode %o, want the display group %d and 0660", gid, mode, p.DisplayGID)
	}
	if uid, _, _ := owner(t, h.ctl.AgentSocket(id)); uid != 0 {
		t.Errorf("agent socket owned by %d, want root (libvirt makes it)", uid)
	}
	// A member of the display group (nobody:nogroup here, zeroclient's gateway on the
	// appliance) gets the display and not the agent; anyone else gets neither.
	const nobody = 65534
	if banner, err := dialAs(t, h.ctl.VNCSocket(id), nobody, p.DisplayGID); err != nil || !strings.HasPrefix(banner, `"RFB 003.`) {
		t.Errorf("the display group cannot reach the display: %q %v", banner, err)
	}
	if out, err := dialAs(t, h.ctl.AgentSocket(id), nobody, p.DisplayGID); err == nil {
		t.Errorf("the display group reached the guest agent: %s", out)
	}
	if out, err := dialAs(t, h.ctl.VNCSocket(id), nobody, nobody-1); err == nil {
		t.Errorf("a user outside the display group reached the display: %s", out)
	}
	h.ctl.mu.Lock()
	held := h.ctl.held[id]
	h.ctl.mu.Unlock()
	if held == nil || !held.HugePages() {
		t.Errorf("guest RAM held %v is not on huge pages", held != nil)
	}
	if !p.Limits {
		// This machine: cgroup v1 owns cpu and memory, and libvirt cannot raise qemu's
		// RLIMIT_MEMLOCK (no CAP_SYS_RESOURCE), which <memtune> needs.
		t.Logf("cgroup limits not checked here (%v); the appliance VM test checks them", confine.CheckLimits())
		return
	}
	checkLimits(t, pid, 1, virt.Spec{Type: h.ctl.cfg.DomainType, MemoryMiB: testMemoryMiB, HugePages: h.ctl.cfg.HugePages}.MemoryLimitMiB())
}

// checkLimits reads the limits in force on process pid from /proc/pid/cgroup and the
// cgroup files of its cgroup and every ancestor (the smallest limit on the way up wins).
func checkLimits(t *testing.T, pid, vcpus, memMiB int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	var path string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			path = p
		}
	}
	if path == "" || path == "/" {
		t.Fatalf("qemu %d is in no cgroup of its own: %q", pid, b)
	}
	memMax, cpus := int64(-1), -1.0
	for d := filepath.Join("/sys/fs/cgroup", path); strings.HasPrefix(d, "/sys/fs/cgroup/"); d = filepath.Dir(d) {
		if m, err := os.ReadFile(filepath.Join(d, "memory.max")); err == nil && strings.TrimSpace(string(m)) != "max" {
			if v, err := strconv.ParseInt(strings.TrimSpace(string(m)), 10, 64); err == nil && (memMax < 0 || v < memMax) {
				memMax = v
			}
		}
		if c, err := os.ReadFile(filepath.Join(d, "cpu.max")); err == nil {
			f := strings.Fields(string(c))
			if len(f) == 2 && f[0] != "max" {
				q, _ := strconv.ParseFloat(f[0], 64)
				p, _ := strconv.ParseFloat(f[1], 64)
				if cpus < 0 || q/p < cpus {
					cpus = q / p
				}
			}
		}
	}
	if memMax != int64(memMiB)<<20 {
		t.Errorf("qemu %d (cgroup %s): memory.max %d, want %d MiB", pid, path, memMax, memMiB)
	}
	if cpus != float64(vcpus) {
		t.Errorf("qemu %d (cgroup %s): cpu.max allows %.2f CPUs, want %d", pid, path, cpus, vcpus)
	}
	t.Logf("qemu %d in %s: memory.max %d MiB, cpu.max %.2f CPUs", pid, path, memMax>>20, cpus)
}
