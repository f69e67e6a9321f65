package nicroles

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"deskhost/internal/testenv"
)

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// TestDHCPProbe runs the real probe: a host namespace with three veths (its "NICs") whose
// peers are in a LAN namespace, where busybox's udhcpd serves the second and third. The
// first NIC has carrier but no DHCP server, so the second, the first in order with a
// lease, is management; then with the second's peer down (no carrier) the third is.
func TestDHCPProbe(t *testing.T) {
	testenv.Root(t)
	if _, err := exec.LookPath("busybox"); err != nil {
		testenv.Missing(t, "busybox (busybox-static) is not installed")
	}
	hostNS, lanNS := fmt.Sprintf("nrh%d", os.Getpid()%100000), fmt.Sprintf("nrl%d", os.Getpid()%100000)
	for _, ns := range []string{hostNS, lanNS} {
		_ = exec.Command("ip", "netns", "del", ns).Run()
		run(t, "ip", "netns", "add", ns)
		ns := ns
		t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	}
	dir := t.TempDir()
	for i := 0; i < 3; i++ {
		nic, peer := fmt.Sprintf("nr%d", i), fmt.Sprintf("nrp%d", i)
		run(t, "ip", "link", "add", nic, "netns", hostNS, "address", fmt.Sprintf("02:00:00:00:0a:%02x", i), "type", "veth", "peer", "name", peer, "netns", lanNS)
		run(t, "ip", "-n", lanNS, "link", "set", peer, "up")
		if i == 0 {
			continue // carrier, no DHCP server
		}
		run(t, "ip", "-n", lanNS, "addr", "add", fmt.Sprintf("192.0.2.%d/28", 16*i+1), "dev", peer)
		conf := filepath.Join(dir, peer+".conf")
		os.WriteFile(conf, []byte(fmt.Sprintf("start 192.0.2.%d\nend 192.0.2.%d\ninterface %s\nlease_file %s\npidfile %s\noption subnet 255.255.255.240\noption lease 600\n",
			16*i+4, 16*i+10, peer, filepath.Join(dir, peer+".leases"), filepath.Join(dir, peer+".pid"))), 0o644)
		os.WriteFile(filepath.Join(dir, peer+".leases"), nil, 0o644)
		cmd := exec.Command("ip", "netns", "exec", lanNS, "busybox", "udhcpd", "-f", conf)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	}
	h, err := netns.GetFromName(hostNS)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	nics, err := List(h, "veth")
	if err != nil || len(nics) != 3 || nics[0].Name != "nr0" || nics[2].Name != "nr2" || nics[1].MAC.String() != "02:00:00:00:0a:01" {
		t.Fatalf("List: %+v %v", nics, err)
	}
	// Down, a NIC has no carrier; Up brings them up and sees it.
	if nics[0].Carrier {
		t.Errorf("a NIC that is down has carrier: %+v", nics[0])
	}
	if nics, err = Up(h, nics, 5*time.Second); err != nil || !nics[0].Carrier || !nics[1].Carrier || !nics[2].Carrier {
		t.Fatalf("Up: %+v %v", nics, err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	probe := DHCPProbe(h, log)
	start := time.Now()
	r := Resolve(context.Background(), Input{NICs: nics, FirstLease: probe})
	if r.Management == nil || r.Management.NIC.Name != "nr1" || r.Management.Rule != RuleDHCP {
		t.Fatalf("management %+v (problems %q), want nr1 by DHCP", r.Management, r.Problems)
	}
	if r.Primary == nil || r.Primary.NIC.Name != "nr0" {
		t.Errorf("primary %+v, want nr0 (the first other NIC with carrier)", r.Primary)
	}
	t.Logf("management %s after %.1fs (nr0 has carrier but no DHCP server)", r.Management.NIC.Name, time.Since(start).Seconds())

	// nr1 loses its carrier: nr2 is the first with carrier and a lease.
	run(t, "ip", "-n", lanNS, "link", "set", "nrp1", "down")
	old := CarrierWait
	CarrierWait = time.Second
	defer func() { CarrierWait = old }()
	nics, _ = List(h, "veth")
	r = Resolve(context.Background(), Input{NICs: nics, FirstLease: probe})
	if r.Management == nil || r.Management.NIC.Name != "nr2" {
		t.Fatalf("without nr1's carrier: management %+v (problems %q), want nr2", r.Management, r.Problems)
	}
	if r.Primary == nil || r.Primary.NIC.Name != "nr0" {
		t.Errorf("primary %+v, want nr0 (has carrier, unlike nr1)", r.Primary)
	}
	// No server anywhere: a fallback and a problem that says so.
	run(t, "ip", "-n", lanNS, "link", "set", "nrp2", "down")
	oldT := LeaseTimeout
	LeaseTimeout = 8 * time.Second
	defer func() { LeaseTimeout = oldT }()
	nics, _ = List(h, "veth")
	r = Resolve(context.Background(), Input{NICs: nics, FirstLease: probe})
	if r.Management == nil || r.Management.Rule != RuleFallback || r.Management.NIC.Name != "nr0" || !strings.Contains(strings.Join(r.Problems, " "), "no DHCP lease") {
		t.Errorf("no lease: %+v %q", r.Management, r.Problems)
	}
}
