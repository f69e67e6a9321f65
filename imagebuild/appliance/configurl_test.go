package appliance_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"io"
	"log"
	"math/big"
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

// configServer serves host.yaml over HTTPS on the loopback, which guests reach as
// 10.0.2.2, with a certificate for 10.0.2.2 under a CA of its own that it sends in its
// chain; it returns the URL as guests see it and the CA's sha256 fingerprint.
func configServer(t *testing.T, cfg []byte, fetched *atomic.Int32) (string, string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "deskhost test config CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "10.0.2.2"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IPAddresses: []net.IP{net.IPv4(10, 0, 2, 2)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ErrorLog: log.New(io.Discard, "", 0), Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/host.yaml" {
			http.NotFound(w, r)
			return
		}
		fetched.Add(1)
		w.Write(cfg)
	}), TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der, caDER}, PrivateKey: key}}}}
	go srv.ServeTLS(l, "", "")
	t.Cleanup(func() { srv.Close() })
	sum := sha256.Sum256(caDER)
	return "https://10.0.2.2:" + strings.TrimPrefix(l.Addr().String(), "127.0.0.1:") + "/host.yaml", hex.EncodeToString(sum[:])
}

// configVM boots the image directly with extra kernel parameters and a blank /perm disk.
func configVM(t *testing.T, name, dir, params string) *vm {
	disk := filepath.Join(t.TempDir(), "perm.qcow2")
	if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, "4G").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img: %v: %s", err, out)
	}
	cmdline, _ := os.ReadFile(filepath.Join(dir, "pxe", "cmdline"))
	args := append(base(), nics("")...)
	args = append(args, "-no-reboot",
		"-kernel", filepath.Join(dir, "pxe", "vmlinuz"), "-initrd", filepath.Join(dir, "pxe", "initrd.img"),
		"-append", strings.TrimSpace(string(cmdline))+" panic=-1 deskhost.perm=/dev/vda "+params,
		"-drive", "file="+disk+",if=virtio,format=qcow2")
	return startVM(t, name, args)
}

// hostConfigLine waits for init's verdict on the host config and returns that line.
func (v *vm) hostConfigLine() string {
	v.t.Helper()
	m, _ := v.waitFor(0, ") starting", 3*time.Minute)
	h, _ := v.waitFor(m, "host config", 3*time.Minute)
	e, _ := v.waitFor(h, "\n", 30*time.Second)
	v.mu.Lock()
	defer v.mu.Unlock()
	return strings.TrimSpace(escRe.ReplaceAllString(string(v.raw[h-len("host config"):e]), ""))
}

// TestConfigURL boots with deskhost.config=https://... on the kernel command line, as an
// operator's PXE menu would, with the CA the server's certificate chains to pinned by
// fingerprint: init brings the NICs up with DHCP just to fetch the host config, verifies
// the server, takes that network down again, and the host comes up as the fetched config
// says (its host name on the status screen), not as the baked one. First, a config that
// nothing verifies (http:// without a sha256) is refused, and the console says why.
func TestConfigURL(t *testing.T) {
	needQEMU(t)
	dir, _ := image(t)

	t.Run("Unverified", func(t *testing.T) {
		url := "http://10.0.2.2:9/host.yaml"
		v := configVM(t, "configurl-unverified", dir, imagelayout.ParamConfig+"="+url)
		line := v.hostConfigLine()
		for _, want := range []string{url, "refused", "deskhost.config.sha256="} {
			if !strings.Contains(line, want) {
				t.Errorf("init's host config line lacks %q: %s", want, line)
			}
		}
		// The console comes up and keeps saying it.
		v.waitScreen("the refusal as an alarm", 3*time.Minute, func(s *vt100.Screen) bool {
			return s.Contains("! host config: host config " + url + ": refused")
		})
		t.Logf("refused: %s", line)
		v.stop()
	})

	cfg := strings.Replace(string(testHostConfig(t)), "init:\n", "init:\n  hostname: deskhost-fetched\n", 1)
	if !strings.Contains(cfg, "hostname: deskhost-fetched") {
		t.Fatal("configs/host-qemu.yaml has no init section for the test to name the host in")
	}
	var fetched atomic.Int32
	url, ca := configServer(t, []byte(cfg), &fetched)
	v := configVM(t, "configurl", dir, imagelayout.ParamConfig+"="+url+" "+imagelayout.ParamConfigCA+"=sha256:"+ca)
	line := v.hostConfigLine()
	if want := "host config from cmdline " + url + " (verified: TLS to the CA " + ca[:16]; !strings.Contains(line, want) {
		t.Fatalf("init's host config line is %q, want %q", line, want)
	}
	m := v.mark()
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
