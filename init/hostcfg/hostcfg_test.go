package hostcfg

import (
	"context"
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
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/imagebuild/serve"
)

func TestCmdline(t *testing.T) {
	p := Cmdline("console=ttyS0 quiet deskhost.config=/a deskhost.config=http://x/y init_on_free=1")
	if p["deskhost.config"] != "http://x/y" || p["init_on_free"] != "1" {
		t.Errorf("%v", p)
	}
	if _, ok := p["quiet"]; !ok {
		t.Error("flag without '=' lost")
	}
}

func TestFindOrder(t *testing.T) {
	dir := t.TempDir()
	baked, perm := filepath.Join(dir, "baked.yaml"), filepath.Join(dir, "perm.yaml")
	f := &Finder{Baked: baked, Perm: perm, Bootstrap: func(context.Context) (func(), error) { return func() {}, nil }}
	ctx := context.Background()
	if _, _, err := f.Find(ctx, nil); err == nil || !strings.Contains(err.Error(), "no host config") {
		t.Errorf("nothing anywhere: %v", err)
	}
	os.WriteFile(perm, []byte("perm"), 0o600)
	if b, src, err := f.Find(ctx, nil); err != nil || string(b) != "perm" || src.Kind != "perm" {
		t.Errorf("perm: %q %v %v", b, src, err)
	}
	os.WriteFile(baked, []byte("baked"), 0o600)
	if b, src, err := f.Find(ctx, nil); err != nil || string(b) != "baked" || src.Kind != "baked" {
		t.Errorf("baked over perm: %q %v %v", b, src, err)
	}
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte("cmdline"), 0o600)
	if b, src, err := f.Find(ctx, map[string]string{"deskhost.config": other}); err != nil || string(b) != "cmdline" || src.Kind != "cmdline" {
		t.Errorf("cmdline path: %q %v %v", b, src, err)
	}
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": "relative.yaml"}); err == nil {
		t.Error("a relative path was accepted")
	}
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": filepath.Join(dir, "none")}); err == nil {
		t.Error("a missing cmdline path fell back to another config")
	}
}

// A URL is fetched from imagebuild serve, over HTTP and over TFTP, verified by the sha256
// on the command line.
func TestFindURL(t *testing.T) {
	dir := t.TempDir()
	content := []byte("hostd: {}\n")
	os.WriteFile(filepath.Join(dir, "host.yaml"), content, 0o644)
	sum := sha256.Sum256(content)
	s, err := serve.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := serve.Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, l)
	ups := 0
	f := &Finder{Baked: filepath.Join(dir, "none"), Bootstrap: func(context.Context) (func(), error) {
		ups++
		return func() {}, nil
	}}
	for _, u := range []string{"http://" + l.HTTP.Addr().String() + "/host.yaml", "tftp://" + l.TFTP.LocalAddr().String() + "/host.yaml"} {
		b, src, err := f.Find(ctx, map[string]string{"deskhost.config": u, "deskhost.config.sha256": hex.EncodeToString(sum[:])})
		if err != nil || string(b) != "hostd: {}\n" || src.Location != u || !strings.Contains(src.String(), "verified: sha256") {
			t.Errorf("%s: %q %v %v", u, b, src, err)
		}
		// Without a sha256 it is refused before any network is brought up, saying what
		// to add.
		before := ups
		_, _, err = f.Find(ctx, map[string]string{"deskhost.config": u})
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "deskhost.config.sha256=") || ups != before {
			t.Errorf("%s unverified: %v", u, err)
		}
		// A wrong sha256: refused, with both sums.
		other := sha256.Sum256([]byte("other"))
		_, _, err = f.Find(ctx, map[string]string{"deskhost.config": u, "deskhost.config.sha256": hex.EncodeToString(other[:])})
		if err == nil || !strings.Contains(err.Error(), hex.EncodeToString(sum[:])) || !strings.Contains(err.Error(), hex.EncodeToString(other[:])) {
			t.Errorf("%s with a wrong sha256: %v", u, err)
		}
	}
	if ups != 4 {
		t.Errorf("bootstrap network brought up %d times, want 4", ups)
	}
	if _, err := Fetch(ctx, "ftp://x/y", Verify{}); err == nil {
		t.Error("ftp accepted")
	}
	if _, err := Fetch(ctx, "http://"+l.HTTP.Addr().String()+"/missing.yaml", Verify{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing over HTTP: %v", err)
	}
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": "http://x/y", "deskhost.config.sha256": "abc"}); err == nil || !strings.Contains(err.Error(), "64 digits") {
		t.Errorf("a short sha256: %v", err)
	}
}

// tlsServer serves content over HTTPS with a certificate for names under a CA of its
// own; withCA puts the CA into the chain it sends.
func tlsServer(t *testing.T, content []byte, withCA bool, names ...string) (url string, caSum []byte) {
	t.Helper()
	if len(names) == 0 {
		names = []string{"127.0.0.1"}
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: names[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	if withCA {
		cert.Certificate = append(cert.Certificate, caDER)
	}
	sum := sha256.Sum256(caDER)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(content) }))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.URL + "/host.yaml", sum[:]
}

// An https:// config is verified against the CA pinned by fingerprint on the command line:
// the right CA passes; another CA, a chain without the CA, or a certificate for another
// name are refused with the reason.
func TestFindHTTPSPinnedCA(t *testing.T) {
	ctx := context.Background()
	content := []byte("hostd: {}\n")
	f := &Finder{Bootstrap: func(context.Context) (func(), error) { return func() {}, nil }}
	u, ca := tlsServer(t, content, true)
	colons := strings.ToUpper(hex.EncodeToString(ca))
	var withColons []string
	for i := 0; i < len(colons); i += 2 {
		withColons = append(withColons, colons[i:i+2])
	}
	for _, pin := range []string{"sha256:" + hex.EncodeToString(ca), strings.Join(withColons, ":")} {
		b, src, err := f.Find(ctx, map[string]string{"deskhost.config": u, "deskhost.config.ca": pin})
		if err != nil || string(b) != string(content) || !strings.Contains(src.Verified, "TLS to the CA") {
			t.Errorf("pinned CA %s: %q %v %v", pin, b, src, err)
		}
	}
	other, otherCA := tlsServer(t, content, true)
	for _, tc := range []struct{ url, pin, want string }{
		{u, hex.EncodeToString(otherCA), "has no certificate with the sha256 fingerprint"},
		{other, hex.EncodeToString(ca), "has no certificate with the sha256 fingerprint"},
		{u, "", "nothing verifies it"},
	} {
		p := map[string]string{"deskhost.config": tc.url}
		if tc.pin != "" {
			p["deskhost.config.ca"] = tc.pin
		}
		if _, _, err := f.Find(ctx, p); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "refused") {
			t.Errorf("%s with %q: %v, want %q", tc.url, tc.pin, err, tc.want)
		}
	}
	// The server leaves the CA out of its chain: refused, saying to serve it.
	noCA, ca3 := tlsServer(t, content, false)
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": noCA, "deskhost.config.ca": hex.EncodeToString(ca3)}); err == nil || !strings.Contains(err.Error(), "full chain") {
		t.Errorf("chain without the CA: %v", err)
	}
	// A certificate for another name, under the pinned CA: refused.
	named, ca4 := tlsServer(t, content, true, "config.example.com")
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": named, "deskhost.config.ca": hex.EncodeToString(ca4)}); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("another name: %v", err)
	}
	// https with only the file's sha256: the content verifies it.
	sum := sha256.Sum256(content)
	if b, _, err := f.Find(ctx, map[string]string{"deskhost.config": u, "deskhost.config.sha256": hex.EncodeToString(sum[:])}); err != nil || string(b) != string(content) {
		t.Errorf("https with a sha256: %q %v", b, err)
	}
	// A CA pin does not verify http://.
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": "http://127.0.0.1:1/x", "deskhost.config.ca": hex.EncodeToString(ca)}); err == nil || !strings.Contains(err.Error(), "verifies https:// only") {
		t.Errorf("http with a CA pin: %v", err)
	}
}

// FuzzVerifyParams: the command line's verification parameters never panic, and whatever
// is accepted is a full sha256; a URL the parameters cannot verify is always refused.
func FuzzVerifyParams(f *testing.F) {
	f.Add("https://10.0.2.2:8443/host.yaml", "sha256:"+strings.Repeat("ab", 32), "")
	f.Add("http://10.0.2.2/h.yaml", "", strings.Repeat("0", 64))
	f.Add("tftp://x/y", "zz", "AB:CD")
	f.Fuzz(func(t *testing.T, loc, ca, sum string) {
		p := map[string]string{"deskhost.config": loc}
		if ca != "" {
			p["deskhost.config.ca"] = ca
		}
		if sum != "" {
			p["deskhost.config.sha256"] = sum
		}
		v, err := VerifyFromParams(p)
		if err == nil && ((v.CA != nil && len(v.CA) != 32) || (v.SHA256 != nil && len(v.SHA256) != 32)) {
			t.Fatalf("accepted a pin that is not a sha256: %+v", v)
		}
		u, perr := url.Parse(loc)
		if err != nil || perr != nil {
			return
		}
		cerr := v.check(u)
		switch u.Scheme {
		case "http", "tftp":
			if cerr == nil && v.SHA256 == nil {
				t.Fatalf("%s accepted without a sha256", loc)
			}
		case "https":
			if cerr == nil && v.SHA256 == nil && v.CA == nil {
				t.Fatalf("%s accepted with nothing to verify it", loc)
			}
		}
	})
}
