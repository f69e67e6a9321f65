package appliance_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"deskhost/internal/imagelayout"
	"deskhost/internal/vt100"
)

// fleetNet is the virtual hosts' shared management network: a bridge in a network
// namespace of the test's own, a tap per host (qemu runs in the namespace), dnsmasq giving
// each host its reserved address by MAC (as a site's DHCP server would: the MACs are in
// no host config), and an HTTP server for the hosts' configs. Nothing leaves it.
type fleetNet struct {
	ns      string
	gateway string // the bridge's address: DHCP and the config server
	configs map[string][]byte
	url     string // the config server, http://gateway:port
}

func newFleetNet(t *testing.T, hosts map[string]string) *fleetNet { // tap → reserved MAC,IP
	t.Helper()
	b := make([]byte, 3)
	rand.Read(b)
	n := &fleetNet{ns: "dfj" + hex.EncodeToString(b), gateway: "10.99.0.1", configs: map[string][]byte{}}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("ip", "netns", "add", n.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", n.ns).Run() })
	run("ip", "-n", n.ns, "link", "set", "lo", "up")
	run("ip", "-n", n.ns, "link", "add", "br0", "type", "bridge")
	run("ip", "-n", n.ns, "addr", "add", n.gateway+"/24", "dev", "br0")
	run("ip", "-n", n.ns, "link", "set", "br0", "up")
	args := []string{"netns", "exec", n.ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0",
		"--interface=br0", "--bind-interfaces", "--dhcp-range=10.99.0.50,10.99.0.99,255.255.255.0,1h",
		"--dhcp-leasefile=" + filepath.Join(t.TempDir(), "leases")}
	for tap, res := range hosts {
		run("ip", "-n", n.ns, "tuntap", "add", "dev", tap, "mode", "tap")
		run("ip", "-n", n.ns, "link", "set", tap, "master", "br0", "up")
		args = append(args, "--dhcp-host="+res)
	}
	dnsmasq := exec.Command("ip", args...)
	var dlog strings.Builder
	dnsmasq.Stdout, dnsmasq.Stderr = &dlog, &dlog
	if err := dnsmasq.Start(); err != nil {
		t.Fatalf("dnsmasq: %v", err)
	}
	t.Cleanup(func() {
		dnsmasq.Process.Kill()
		dnsmasq.Wait()
		if t.Failed() {
			t.Logf("dnsmasq:\n%s", dlog.String())
		}
	})
	l := listenIn(t, n.ns, n.gateway+":0")
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := n.configs[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	n.url = "http://" + l.Addr().String()
	return n
}

// listenIn listens on addr inside the network namespace ns (the socket stays there).
func listenIn(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	h, err := netns.GetFromName(ns)
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer h.Close()
	if err := netns.Set(h); err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	l, lerr := net.Listen("tcp", addr)
	if err := netns.Set(orig); err != nil {
		t.Fatalf("back to the test's network namespace: %v", err) // the thread stays locked and dies with the goroutine
	}
	runtime.UnlockOSThread()
	if lerr != nil {
		t.Fatal(lerr)
	}
	return l
}

// serve publishes a host config and returns the kernel parameters that fetch and verify it.
func (n *fleetNet) serve(name string, cfg []byte) string {
	n.configs[name] = cfg
	sum := sha256.Sum256(cfg)
	return imagelayout.ParamConfig + "=" + n.url + "/" + name + " " + imagelayout.ParamConfigSHA256 + "=" + hex.EncodeToString(sum[:])
}

// fleetHostConfig is the test's host config for a fleet host at addr: fleet lines in
// hostd's section, and no NTP server (the test's is on qemu's user network, which the
// management network here is not).
func fleetHostConfig(t *testing.T, fleet string) []byte {
	t.Helper()
	s := string(testHostConfig(t))
	s = regexp.MustCompile(`servers: \[[^\]]*\]`).ReplaceAllString(s, "servers: []")
	if !strings.HasPrefix(s, "#") || !strings.Contains(s, "\nhostd:\n") {
		t.Fatal("configs/host-qemu.yaml has no hostd section for the test to extend")
	}
	return []byte(strings.Replace(s, "\nhostd:\n", "\nhostd:\n  fleet:\n"+fleet, 1))
}

// fleetVM boots the image directly (as a PXE menu's kernel and initrd would) with its
// management NIC on the fleet network's tap, its primary NIC on qemu's user network, a DMI
// system UUID (its hardware identity) and a blank /perm disk.
func fleetVM(t *testing.T, n *fleetNet, name, dir, tap, mgmtMAC, params string) *vm {
	t.Helper()
	disk := filepath.Join(t.TempDir(), "perm.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "4G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	u := make([]byte, 16)
	rand.Read(u)
	uuid := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	cmdline, _ := os.ReadFile(filepath.Join(dir, "pxe", "cmdline"))
	args := append(base(), "-uuid", uuid,
		"-netdev", "tap,id=mgmt,ifname="+tap+",script=no,downscript=no", "-device", "virtio-net-pci,netdev=mgmt,mac="+mgmtMAC,
		"-netdev", "user,id=primary,net=10.0.3.0/24", "-device", "virtio-net-pci,netdev=primary,mac="+randomMAC(),
		"-device", "virtio-rng-pci", "-no-reboot",
		"-kernel", filepath.Join(dir, "pxe", "vmlinuz"), "-initrd", filepath.Join(dir, "pxe", "initrd.img"),
		"-append", strings.TrimSpace(string(cmdline))+" panic=-1 deskhost.perm=/dev/vda "+params,
		"-drive", "file="+disk+",if=virtio,format=qcow2")
	return startVMIn(t, name, n.ns, args)
}

var (
	joinCodeScreenRe = regexp.MustCompile(`Fleet\s+join code ([A-Z2-7]{4}-[A-Z2-7]{4}-[A-Z2-7]{4})`)
	fleetRowRe       = regexp.MustCompile(`Fleet\s+(.*)`)
)

func fleetRow(s *vt100.Screen) string {
	if m := fleetRowRe.FindStringSubmatch(s.Row("Fleet")); m != nil {
		return strings.TrimSpace(m[1])
	}
	return ""
}

// TestFleetJoin: two virtual hosts from the same generic image, with MACs that appear in
// no host config, form a fleet on their own management network. Host 1 makes the fleet
// and is ready. Host 2, told to join host 1, shows its join code on its console and is
// not ready (it has no credentials, its API serves nothing) until host 1's console
// approves that code (9 Hosts, after the console password); then host 2 is ready and
// both consoles count 2 ready hosts.
func TestFleetJoin(t *testing.T) {
	needQEMU(t)
	needTool(t, "dnsmasq", "ip")
	dir, _ := image(t)
	mac1, mac2 := randomMAC(), randomMAC()
	for mac2 == mac1 {
		mac2 = randomMAC()
	}
	n := newFleetNet(t, map[string]string{"tapfj1": mac1 + ",10.99.0.11", "tapfj2": mac2 + ",10.99.0.12"})
	capacity := "    capacity: {vcpus: 2, memoryMiB: 512}\n"
	p1 := n.serve("host1.yaml", fleetHostConfig(t, "    advertise: 10.99.0.11\n    bootstrap: true\n    name: vmfleet1\n"+capacity))
	p2 := n.serve("host2.yaml", fleetHostConfig(t, "    advertise: 10.99.0.12\n    join: https://10.99.0.11:7443\n    name: vmfleet2\n"+capacity))

	start := time.Now()
	v1 := fleetVM(t, n, "fleet1", dir, "tapfj1", mac1, p1)
	d1 := v1.waitReady(0, readyTimeout)
	t.Logf("host 1 made the fleet and is ready after %.1fs", d1.Seconds())
	v1.waitScreen("host 1's fleet line", 2*time.Minute, func(s *vt100.Screen) bool {
		return fleetRow(s) == "1 host: 1 ready; this one ready"
	})

	// Host 2 boots while host 1 runs: its console shows a join code, and it is not ready.
	v2 := fleetVM(t, n, "fleet2", dir, "tapfj2", mac2, p2)
	v2.waitScreen("host 2's join code", readyTimeout, func(s *vt100.Screen) bool { return joinCodeScreenRe.MatchString(s.String()) })
	code := joinCodeScreenRe.FindStringSubmatch(v2.screen.String())[1]
	t.Logf("host 2 shows join code %s after %.1fs", code, time.Since(v2.started).Seconds())
	if strings.Contains(v2.text(0), imagelayout.ReadyLine) {
		t.Fatalf("host 2 is ready before it was approved:\n%s", v2.screen)
	}

	// Host 1's console lists it under that code, and approves it.
	v1.waitScreen("the status screen", time.Minute, func(s *vt100.Screen) bool { return s.Contains("Choose 1-9:") })
	v1.send("9")
	itemRe := regexp.MustCompile(`(?m)^\s*(\d+)\s+.*joining\s+join code ` + code)
	v1.waitScreen("host 2 in host 1's host list", 2*time.Minute, func(s *vt100.Screen) bool { return itemRe.MatchString(s.String()) })
	t.Logf("host 1's hosts screen:\n%s", v1.screen)
	v1.send(itemRe.FindStringSubmatch(v1.screen.String())[1])
	v1.waitScreen("the approve prompt", 30*time.Second, func(s *vt100.Screen) bool { return s.Contains("Choose a:") })
	v1.send("a\r")
	v1.authorized("the approval question", 2*time.Minute, func(s *vt100.Screen) bool { return s.Contains("Approve " + code + "? (y/n)") })
	v1.send("y\r")
	v1.waitScreen("the approval", time.Minute, func(s *vt100.Screen) bool { return s.Contains("approved host-") })
	approved := time.Now()
	m := v2.mark()
	v2.waitReady(m, readyTimeout)
	t.Logf("host 2 ready %.1fs after host 1's console approved it", time.Since(approved).Seconds())

	// Both count the fleet the same: 2 hosts, both ready.
	v2.waitScreen("host 2's fleet line", 2*time.Minute, func(s *vt100.Screen) bool {
		return fleetRow(s) == "2 hosts: 2 ready; this one ready"
	})
	v1.waitScreen("host 1's fleet line", 2*time.Minute, func(s *vt100.Screen) bool {
		return fleetRow(s) == "2 hosts: 2 ready; this one ready"
	})
	t.Logf("host 2's status screen:\n%s", v2.screen)
	t.Logf("fleet of 2 virtual hosts in %.1fs", time.Since(start).Seconds())
}
