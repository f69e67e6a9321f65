package appliance_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"deskhost/imagebuild/serve"
)

// pxeHost is what a PXE boot needs besides qemu: imagebuild serve on the loopback (HTTP;
// qemu's user network shows it to guests as 10.0.2.2), and its ProxyDHCP on the
// management NIC's network.
type pxeHost struct {
	srv   *serve.Server
	proxy *serve.ProxyDHCP
	qnet  *serve.QEMUNet
	url   string // boot.ipxe as guests fetch it
}

// startPXEServer serves bundle until the test ends.
func startPXEServer(t testing.TB, bundle string) *pxeHost {
	t.Helper()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	srv, err := serve.New(bundle, log)
	if err != nil {
		t.Fatal(err)
	}
	l, err := serve.Listen("127.0.0.1:0", "")
	if err != nil {
		srv.Close()
		t.Fatal(err)
	}
	url := fmt.Sprintf("http://10.0.2.2:%d/boot.ipxe", l.HTTP.Addr().(*net.TCPAddr).Port)
	proxy, err := serve.NewProxyDHCP(url, net.IPv4(10, 0, 2, 2), nil)
	if err != nil {
		t.Fatal(err)
	}
	proxy.Log = log.Info
	qnet, err := serve.ListenQEMU(t.TempDir(), proxy)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { srv.Run(ctx, l); done <- struct{}{} }()
	go func() { qnet.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		<-done
		<-done
		srv.Close()
	})
	return &pxeHost{srv: srv, proxy: proxy, qnet: qnet, url: url}
}

// vmArgs is the virtual host `make demo` boots over PXE: two NICs, the management one
// with iPXE as its boot device and the ProxyDHCP attached, and disk.img as its disk.
func (p *pxeHost) vmArgs(t testing.TB, dir string, n vmNICs) []string {
	args := append(base(), n.args(p.url)...)
	args = append(args, p.qnet.Args("mgmt")...)
	return append(args, "-drive", "file="+diskOverlay(t, dir)+",if=none,id=disk,format=qcow2",
		"-device", "virtio-blk-pci,drive=disk", "-no-reboot", "-boot", "n")
}

// diskOverlay is a fresh copy-on-write overlay of the image's disk.img.
func diskOverlay(t testing.TB, dir string) string {
	t.Helper()
	overlay := filepath.Join(t.TempDir(), "disk.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", filepath.Join(dir, "disk.img"), overlay).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	return overlay
}

// bootPhases are a boot's landmarks, as times since qemu started.
type bootPhases struct {
	script time.Duration // PXE: iPXE requested boot.ipxe (after firmware, iPXE's banner, DHCP)
	initrd time.Duration // PXE: the last byte of initrd.img was sent
	init   time.Duration // init's first line on the serial console
	ready  time.Duration // the ready line
}

func (b bootPhases) String() string {
	if b.script == 0 {
		return fmt.Sprintf("firmware+kernel+initramfs -> init %.1fs, init -> ready %.1fs", b.init.Seconds(), (b.ready - b.init).Seconds())
	}
	return fmt.Sprintf("firmware+iPXE+DHCP -> boot.ipxe %.1fs, HTTP -> initrd.img sent %.1fs, iPXE load+kernel+initramfs -> init %.1fs, init -> ready %.1fs",
		b.script.Seconds(), (b.initrd - b.script).Seconds(), (b.init - b.initrd).Seconds(), (b.ready - b.init).Seconds())
}

// phases waits for the boot to reach the ready line. With p, the HTTP transfers since
// qemu started give the PXE landmarks.
func (v *vm) phases(p *pxeHost, timeout time.Duration) bootPhases {
	v.t.Helper()
	m, initAt := v.waitFor(0, ") starting", timeout) // init's first line
	ready := v.waitReady(m, timeout)
	b := bootPhases{init: initAt, ready: ready}
	if p != nil {
		for _, tr := range p.srv.Transfers() {
			if tr.Start.Before(v.started) {
				continue
			}
			switch tr.Path {
			case "boot.ipxe":
				if b.script == 0 {
					b.script = tr.Start.Sub(v.started)
				}
			case "initrd.img":
				b.initrd = tr.End.Sub(v.started)
			}
		}
	}
	return b
}
