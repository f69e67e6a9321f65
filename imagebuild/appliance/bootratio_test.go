package appliance_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBootRatio measures PXE -> ready against direct kernel -> ready on the same virtual
// host (two NICs, disk.img through an overlay) with the same kernel, initramfs and
// command line, the variants alternating so that the machine's load hits all alike:
//
//   - direct: qemu -kernel/-initrd/-append (qemu loads both files through fw_cfg);
//   - pxe: iPXE from the NIC's ROM, imagebuild serve over HTTP and its ProxyDHCP, as
//     TestPXE and `make demo` boot;
//   - pxe-no-proxydhcp: the same without the ProxyDHCP (iPXE waits ~3 s for one);
//   - pxe-before: the PXE test as it was: no ProxyDHCP and no disk, so init also waits
//     2 s for a /perm partition that never comes.
//
// It takes about 2 minutes a round, so it runs only with DESKHOST_BOOT_RATIO=ROUNDS:
//
//	DESKHOST_BOOT_RATIO=5 go test ./imagebuild/appliance -run TestBootRatio -v -timeout 60m
func TestBootRatio(t *testing.T) {
	rounds, _ := strconv.Atoi(os.Getenv("DESKHOST_BOOT_RATIO"))
	if rounds <= 0 {
		t.Skip("set DESKHOST_BOOT_RATIO=ROUNDS to measure PXE against direct boot (about 2 minutes a round)")
	}
	needQEMU(t)
	needFile(t, "/usr/lib/ipxe/qemu/efi-virtio.rom")
	dir, _ := image(t)
	p := startPXEServer(t, filepath.Join(dir, "pxe"))
	cmdline, err := os.ReadFile(filepath.Join(dir, "pxe", "cmdline"))
	if err != nil {
		t.Fatal(err)
	}
	disk := func() []string {
		return []string{"-drive", "file=" + diskOverlay(t, dir) + ",if=none,id=disk,format=qcow2", "-device", "virtio-blk-pci,drive=disk"}
	}
	variants := []struct {
		name string
		args func() []string
		pxe  bool
	}{
		{"direct", func() []string {
			args := append(base(), nics("")...)
			args = append(args, disk()...)
			return append(args, "-no-reboot", "-kernel", filepath.Join(dir, "pxe", "vmlinuz"),
				"-initrd", filepath.Join(dir, "pxe", "initrd.img"), "-append", strings.TrimSpace(string(cmdline)))
		}, false},
		{"pxe", func() []string { return p.vmArgs(t, dir, newNICs(false)) }, true},
		{"pxe-no-proxydhcp", func() []string {
			args := append(base(), nics(p.url)...)
			args = append(args, disk()...)
			return append(args, "-no-reboot", "-boot", "n")
		}, true},
		{"pxe-before", func() []string {
			return append(append(base(), nics(p.url)...), "-no-reboot", "-boot", "n")
		}, true},
	}
	results := map[string][]bootPhases{}
	for r := 0; r < rounds; r++ {
		for _, vr := range variants {
			v := startVM(t, fmt.Sprintf("%s-%d", vr.name, r), vr.args())
			var ph bootPhases
			if vr.pxe {
				ph = v.phases(p, readyTimeout)
			} else {
				ph = v.phases(nil, readyTimeout)
			}
			v.stop()
			results[vr.name] = append(results[vr.name], ph)
			t.Logf("round %d %-16s ready %5.1fs  %s", r+1, vr.name, ph.ready.Seconds(), ph)
		}
		d := results["direct"][r].ready.Seconds()
		t.Logf("round %d: pxe/direct %.2fx, pxe-no-proxydhcp/direct %.2fx, pxe-before/direct %.2fx", r+1,
			results["pxe"][r].ready.Seconds()/d, results["pxe-no-proxydhcp"][r].ready.Seconds()/d, results["pxe-before"][r].ready.Seconds()/d)
	}
	med := func(xs []float64) float64 {
		sort.Float64s(xs)
		if len(xs)%2 == 1 {
			return xs[len(xs)/2]
		}
		return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2
	}
	var b strings.Builder
	fmt.Fprintf(&b, "medians of %d rounds (seconds since qemu started):\n", rounds)
	fmt.Fprintf(&b, "%-18s %8s %8s %8s %8s   %s\n", "variant", "script", "initrd", "init", "ready", "ratio to direct (median, min-max)")
	for _, vr := range variants {
		var script, initrd, init, ready, ratio []float64
		for i, ph := range results[vr.name] {
			script = append(script, ph.script.Seconds())
			initrd = append(initrd, ph.initrd.Seconds())
			init = append(init, ph.init.Seconds())
			ready = append(ready, ph.ready.Seconds())
			ratio = append(ratio, ph.ready.Seconds()/results["direct"][i].ready.Seconds())
		}
		fmt.Fprintf(&b, "%-18s %8.1f %8.1f %8.1f %8.1f   %.2fx (%.2f-%.2f)\n", vr.name, med(script), med(initrd), med(init), med(ready),
			med(append([]float64(nil), ratio...)), minOf(ratio), maxOf(ratio))
	}
	t.Log(b.String())
}

// stop ends the guest now.
func (v *vm) stop() {
	_ = v.cmd.Process.Kill()
	select {
	case <-v.done:
	case <-time.After(30 * time.Second):
	}
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = min(m, x)
	}
	return m
}

func maxOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}
