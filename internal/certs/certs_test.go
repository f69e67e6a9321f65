package certs

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestSelfSigned(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c, err := SelfSigned(dir, []string{"desk.example.com", "192.0.2.10"}, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	pem, _ := os.ReadFile(filepath.Join(dir, CAFile))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, name := range []string{"desk.example.com", "192.0.2.10", "127.0.0.1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	again, _ := SelfSigned(dir, []string{"desk.example.com"}, now)
	if string(again.Certificate[0]) != string(c.Certificate[0]) {
		t.Error("the certificate was remade although it still covers the names")
	}
	if fi, _ := os.Stat(filepath.Join(dir, KeyFile)); fi.Mode().Perm() != 0o600 {
		t.Error("the key is readable by others")
	}
}

// TestRemadeKeepsCA: a new name remakes the server certificate, under the same CA, so
// clients that trust ca.pem keep trusting the server.
func TestRemadeKeepsCA(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	c1, err := SelfSigned(dir, []string{"a.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ca1, _ := os.ReadFile(filepath.Join(dir, CAFile))
	c2, err := SelfSigned(dir, []string{"a.example", "b.example"}, now)
	if err != nil {
		t.Fatal(err)
	}
	ca2, _ := os.ReadFile(filepath.Join(dir, CAFile))
	if string(c1.Certificate[0]) == string(c2.Certificate[0]) {
		t.Fatal("a certificate missing a name was kept")
	}
	if string(ca1) != string(ca2) {
		t.Error("the CA changed when only the server certificate needed remaking")
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca1)
	leaf, _ := x509.ParseCertificate(c2.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "b.example"}); err != nil {
		t.Errorf("the remade certificate does not verify under the kept CA: %v", err)
	}
	for name, want := range map[string]os.FileMode{CAFile: 0o644, CertFile: 0o644, KeyFile: 0o600, caKey: 0o600} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, want)
		}
	}
}

func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	if _, err := SelfSigned(dir, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ cert, key, dir string }{
		{filepath.Join(dir, CertFile), "", ""},
		{"", filepath.Join(dir, KeyFile), ""},
		{"", "", ""},
		{filepath.Join(dir, CertFile), filepath.Join(dir, "missing.pem"), ""},
	} {
		if _, err := Load(c.cert, c.key, c.dir, nil); err == nil {
			t.Errorf("Load(%q, %q, %q) succeeded", c.cert, c.key, c.dir)
		}
	}
	if _, err := Load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), "", nil); err != nil {
		t.Errorf("configured pair: %v", err)
	}
}

func TestIssue(t *testing.T) {
	ca, out := t.TempDir(), t.TempDir()
	now := time.Now()
	cert, key := filepath.Join(out, "m1.pem"), filepath.Join(out, "m1-key.pem")
	if err := Issue(ca, Leaf{CommonName: "m1", Names: []string{"127.0.0.1", "m1.fleet"}, Server: true, Client: true}, cert, key, now); err != nil {
		t.Fatal(err)
	}
	c, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(c.Certificate[0])
	pem, _ := os.ReadFile(CAPath(ca))
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	for _, u := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "127.0.0.1", KeyUsages: []x509.ExtKeyUsage{u}}); err != nil {
			t.Errorf("usage %v: %v", u, err)
		}
	}
	// A client-only certificate is no server's.
	if err := Issue(ca, Leaf{CommonName: "host", Client: true}, cert, key, now); err != nil {
		t.Fatal(err)
	}
	c, _ = tls.LoadX509KeyPair(cert, key)
	leaf, _ = x509.ParseCertificate(c.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("a client certificate verified for server use")
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", fi.Mode().Perm())
	}
	if err := Issue(ca, Leaf{CommonName: "x"}, cert, key, now); err == nil {
		t.Error("a certificate with no usage was issued")
	}
}
