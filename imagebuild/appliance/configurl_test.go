package appliance_test

import (
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"deskhost/internal/imagelayout"
	"deskhost/internal/vt100"
)

// TestConfigURL boots with deskhost.config=http://... on the kernel command line, as an
// operator's PXE menu would: init brings the NICs up with DHCP just to fetch the host
// config, takes that network down again, and the host comes up as the fetched config
// says (its host name on the status screen), not as the baked one.
func TestConfigURL(t *testing.T) {
	needQEMU(t)
	dir, _ := image(t)
	cfg := strings.Replace(string(testHostConfig(t)), "hostname: deskhost-vm", "hostname: deskhost-fetched", 1)
	if !strings.Contains(cfg, "hostname: deskhost-fetched") {
		t.Fatal("configs/host-qemu.yaml has no `hostname: deskhost-vm` for the test to change")
	}
	var fetched atomic.Int32
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/host.yaml" {
			http.NotFound(w, r)
			return
		}
		fetched.Add(1)
		w.Write([]byte(cfg))
	})}
	go srv.Serve(l)
	defer srv.Close()
	url := "http://10.0.2.2:" + strings.TrimPrefix(l.Addr().String(), "127.0.0.1:") + "/host.yaml"

	disk := filepath.Join(t.TempDir(), "perm.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "4G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "pxe", "cmdline"))
	args := append(base(), nics("")...)
	args = append(args, "-no-reboot",
		"-kernel", filepath.Join(dir, "pxe", "vmlinuz"), "-initrd", filepath.Join(dir, "pxe", "initrd.img"),
		"-append", strings.TrimSpace(string(cmdline))+" panic=-1 deskhost.perm=/dev/vda "+imagelayout.ParamConfig+"="+url,
		"-drive", "file="+disk+",if=virtio,format=qcow2")
	v := startVM(t, "configurl", args)
	// init's verdict on the host config comes first: stop at a failure rather than wait
	// for a ready line that cannot come.
	m, _ := v.waitFor(0, "host config", 3*time.Minute)
	m, _ = v.waitFor(m, "\n", 30*time.Second) // the whole line
	if want := "host config from cmdline " + url; !strings.Contains(v.text(0), want) {
		boot := v.text(0)
		if i := strings.Index(boot, ") starting"); i > 0 {
			boot = boot[i:]
		}
		t.Fatalf("boot log lacks %q:\n%s", want, head(boot, 4000))
	}
	d := v.waitReady(m, readyTimeout)
	if fetched.Load() == 0 {
		t.Errorf("the host config was never fetched from %s", url)
	}
	v.waitScreen("the fetched host name", time.Minute, func(s *vt100.Screen) bool { return s.Contains("deskhost-fetched") })
	// The bootstrap network is gone and netcfg's is in place: the management address.
	v.waitScreen("the management address", time.Minute, func(s *vt100.Screen) bool { return mgmtRe.MatchString(s.String()) })
	t.Logf("config from %s: %q after %.1fs", url, imagelayout.ReadyLine, d.Seconds())
}

func head(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
