package certs

import (
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
