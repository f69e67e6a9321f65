package controller

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
)

// BenchmarkCreateToAvailable compares, in the same run, hostd's create → AVAILABLE with
// the least any tool could do for the same guest: `virsh create` of the same domain XML on
// fresh volumes, then waiting for the guest agent to answer. It reports the ratio (goal:
// hostd adds ≤ 10 %) and the host memory each WorkSpace's qemu uses beyond guest RAM.
func BenchmarkCreateToAvailable(b *testing.B) {
	h := newHarness(b, nil, nil)
	ctx := context.Background()
	img := h.ctl.cfg.Images.(StaticImages)[testImage]
	users := testUsers()
	var hostd, baseline time.Duration
	var overheadKiB int64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// hostd: API call to AVAILABLE.
		b.StartTimer()
		t0 := time.Now()
		w := h.create(users[i%len(users)].UserName)
		h.waitState(w.ID, workspace.Available, bootWithin)
		hostd += time.Since(t0)
		b.StopTimer()
		pid := qemuPID(b, w.ID)
		kib, err := beyondRAM(pid)
		if err != nil {
			b.Fatal(err)
		}
		overheadKiB += kib
		if f, _ := h.svc.TerminateWorkspaces(ctx, []string{w.ID}); len(f) > 0 {
			b.Fatal(f)
		}
		h.waitState(w.ID, workspace.Terminated, time.Minute)
		markTerminatedGone(b, h, w.ID)

		// Baseline: the same domain, by hand.
		// Not "ws-": hostd would rightly remove it as an orphan.
		name := fmt.Sprintf("bench-%06d", i)
		dir := filepath.Join(h.dir, "bench", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		root, user := filepath.Join(dir, "root.qcow2"), filepath.Join(dir, "user.qcow2")
		for _, args := range [][]string{
			{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img.Root, root, "80G"},
			{"create", "-q", "-f", "qcow2", user, "10G"},
		} {
			if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
				b.Fatalf("qemu-img: %v %s", err, out)
			}
		}
		spec, err := h.ctl.spec(workspace.Workspace{ID: name, ImageID: testImage, Properties: w.Properties}, root, user)
		if err != nil {
			b.Fatal(err)
		}
		spec.VNCSocket, spec.AgentSocket, spec.SerialLog = filepath.Join(dir, "vnc.sock"), filepath.Join(dir, "agent.sock"), filepath.Join(dir, "serial.log")
		x, err := virt.DomainXML(spec)
		if err != nil {
			b.Fatal(err)
		}
		xmlPath := filepath.Join(dir, "domain.xml")
		if err := os.WriteFile(xmlPath, []byte(x), 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		t0 = time.Now()
		if out, err := exec.Command("virsh", "-c", "qemu:///system?socket="+testenvSocket(b), "create", xmlPath).CombinedOutput(); err != nil {
			b.Fatalf("virsh create: %v %s", err, out)
		}
		actx, cancel := context.WithTimeout(ctx, bootWithin)
		a, err := agent.Dial(actx, spec.AgentSocket)
		if err == nil {
			_, err = a.Status(actx)
			a.Close()
		}
		cancel()
		if err != nil {
			log, _ := os.ReadFile(spec.SerialLog)
			st, _ := h.conn.State(name)
			b.Fatalf("baseline guest: %v (domain %s)\n%s", err, st, log)
		}
		baseline += time.Since(t0)
		b.StopTimer()
		_ = h.conn.Destroy(name)
	}
	b.ReportMetric(hostd.Seconds()/float64(b.N), "hostd-s/op")
	b.ReportMetric(baseline.Seconds()/float64(b.N), "virsh-s/op")
	b.ReportMetric(hostd.Seconds()/baseline.Seconds(), "hostd/virsh")
	b.ReportMetric(float64(overheadKiB)/float64(b.N)/1024, "qemu-MiB-beyond-RAM")
}

func testenvSocket(b testing.TB) string {
	s := os.Getenv("DESKHOST_LIBVIRT_SOCKET")
	if s == "" {
		s = "/run/deskhost/libvirt/run/libvirt-sock"
	}
	return s
}

// markTerminatedGone waits until libvirt holds nothing of id.
func markTerminatedGone(b testing.TB, h *harness, id string) {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if st := h.domainState(id); st == virt.Missing && len(h.volumes(id)) == 0 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Fatalf("%s not gone from libvirt", id)
}

// beyondRAM is the proportional set size of qemu process pid minus its guest-RAM memfd:
// what a WorkSpace costs the host beyond the RAM it was given.
func beyondRAM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total, ram int64
	inRAM := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			inRAM = strings.Contains(line, "/memfd:memory-backend")
			continue
		}
		if len(fields) == 3 && fields[0] == "Pss:" {
			kib, _ := strconv.ParseInt(fields[1], 10, 64)
			total += kib
			if inRAM {
				ram += kib
			}
		}
	}
	return total - ram, sc.Err()
}
