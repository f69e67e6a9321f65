package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
	"deskhost/internal/certs"
	"deskhost/internal/hostconfig"
)

// TestAuditLog: every call is one record with the stable keys; secrets never appear.
func TestAuditLog(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	c := e.client(accessKeyID, secretKey)
	if _, err := c.CreateWorkspaces(ctx, &workspaces.CreateWorkspacesInput{Workspaces: []types.WorkspaceRequest{
		{DirectoryId: aws.String(dirID), UserName: aws.String("alice"), BundleId: aws.String(bundleStd)},
		{DirectoryId: aws.String(dirID), UserName: aws.String("bob"), BundleId: aws.String("wsb-nosuchbndl")},
	}}); err != nil {
		t.Fatal(err)
	}
	e.client(accessKeyID, "wrong-secret-wrong-secret-wrong").DescribeWorkspaces(ctx, &workspaces.DescribeWorkspacesInput{})
	e.raw(rawCall{target: "WorkspacesService.Nope", body: []byte(`{}`)})

	var calls []map[string]any
	sc := bufio.NewScanner(strings.NewReader(e.log.String()))
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		if rec["msg"] == "admin api call" {
			calls = append(calls, rec)
		}
	}
	if len(calls) != 3 {
		t.Fatalf("%d audit records, want 3:\n%s", len(calls), e.log.String())
	}
	for _, rec := range calls {
		for _, k := range []string{"action", "principal", "access_key", "source", "request_id", "result", "status", "duration"} {
			if _, ok := rec[k]; !ok {
				t.Errorf("record lacks %s: %v", k, rec)
			}
		}
		if !strings.HasPrefix(rec["source"].(string), "127.0.0.1:") {
			t.Errorf("source %v", rec["source"])
		}
	}
	ok, bad, unknown := calls[0], calls[1], calls[2]
	if ok["action"] != "CreateWorkspaces" || ok["principal"] != "admin" || ok["access_key"] != accessKeyID || ok["result"] != "ok" ||
		ok["status"] != 200.0 || ok["failed_items"] != 1.0 || !strings.Contains(ok["params"].(string), `"UserName":"alice"`) {
		t.Errorf("create record %v", ok)
	}
	if bad["result"] != "InvalidSignatureException" || bad["status"] != 403.0 || bad["principal"] != "" || bad["access_key"] != accessKeyID {
		t.Errorf("bad-signature record %v", bad)
	}
	if unknown["result"] != "UnknownOperationException" || unknown["action"] != "WorkspacesService.Nope" || unknown["principal"] != "admin" {
		t.Errorf("unknown-operation record %v", unknown)
	}
	log := e.log.String()
	for _, secret := range []string{secretKey, "wrong-secret-wrong-secret-wrong", "Signature=", "AWS4-HMAC-SHA256"} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// TestInternalFailureHidesDetail: a service failure is a 500 InternalFailure whose message
// points at the log by request id, and the log has the detail.
func TestInternalFailureHidesDetail(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.store.Close() // every store access now fails
	r := e.raw(rawCall{target: "WorkspacesService.DescribeWorkspaces", body: []byte(`{}`)})
	if r.status != 500 || r.errType != "InternalFailure" || !strings.Contains(r.message, r.header.Get("x-amzn-RequestId")) {
		t.Fatalf("got %d %s %q", r.status, r.errType, r.message)
	}
	if strings.Contains(r.message, "database") {
		t.Errorf("internal detail leaked to the client: %q", r.message)
	}
	if !strings.Contains(e.log.String(), "admin api internal failure") {
		t.Errorf("no internal-failure log record")
	}
}

func TestTLSPolicy(t *testing.T) {
	e := newEnv(t, envOptions{})
	addr := strings.TrimPrefix(e.url, "https://")
	dial := func(cfg *tls.Config) error {
		cfg.RootCAs = e.roots
		cfg.ServerName = "127.0.0.1"
		c, err := tls.Dial("tcp", addr, cfg)
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("TLS 1.2 with ECDHE refused: %v", err)
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS13}); err != nil {
		t.Errorf("TLS 1.3 refused: %v", err)
	}
	if err := dial(&tls.Config{MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11}); err == nil {
		t.Errorf("TLS 1.1 accepted")
	}
	if err := dial(&tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_CBC_SHA}}); err == nil {
		t.Errorf("a suite without forward secrecy was accepted")
	}
	// The self-signed certificate names the listen address and localhost.
	for _, name := range []string{"127.0.0.1", "localhost"} {
		cfg := &tls.Config{RootCAs: e.roots, ServerName: name}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Errorf("verifying as %s: %v", name, err)
			continue
		}
		c.Close()
	}
}

func TestLoadOrCreateCertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	cert, path, err := LoadOrCreateCertificate("", "", dir, "192.0.2.10:8443")
	if err != nil {
		t.Fatal(err)
	}
	x, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"192.0.2.10", "localhost", "127.0.0.1", "::1"} {
		if err := x.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not name %s: %v", h, err)
		}
	}
	if x.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithm %v, want ECDSA", x.PublicKeyAlgorithm)
	}
	if fi, err := os.Stat(filepath.Join(dir, certs.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v %v", fi.Mode().Perm(), err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v %v", fi.Mode().Perm(), err)
	}
	// Made once: a second call loads the same certificate.
	pem1, _ := os.ReadFile(path)
	_, path2, err := LoadOrCreateCertificate("", "", dir, "192.0.2.10:8443")
	pem2, _ := os.ReadFile(path2)
	if err != nil || path2 != path || string(pem1) != string(pem2) {
		t.Errorf("second call made a new certificate (%v)", err)
	}
	// A new listen address the kept certificate does not name: remade.
	cert3, _, err := LoadOrCreateCertificate("", "", dir, "192.0.2.99:8443")
	if err != nil {
		t.Fatal(err)
	}
	x3, _ := x509.ParseCertificate(cert3.Certificate[0])
	if x3.VerifyHostname("192.0.2.99") != nil {
		t.Errorf("remade certificate does not name the new address")
	}
	// Configured files are loaded as they are.
	keyPath := filepath.Join(dir, certs.KeyFile)
	certPath := filepath.Join(dir, certs.CertFile)
	if _, p, err := LoadOrCreateCertificate(certPath, keyPath, "", ""); err != nil || p != certPath {
		t.Errorf("configured certificate: %v %s", err, p)
	}
	if _, _, err := LoadOrCreateCertificate(certPath, "", "", ""); err == nil {
		t.Errorf("a certificate without its key was accepted")
	}
}

// gatedService is the real service with a gate in DescribeWorkspaces, so that a test can
// hold a call inside its handler.
type gatedService struct {
	Service
	entered chan struct{}
	release chan struct{}
}

func (g *gatedService) DescribeWorkspaces(ctx context.Context, f service.DescribeFilter) ([]workspace.Workspace, string, error) {
	close(g.entered)
	<-g.release
	return g.Service.DescribeWorkspaces(ctx, f)
}

// TestGracefulShutdown: a call in its handler when the context ends still gets its answer,
// then ServeHTTPS returns nil and the port is closed.
func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, envOptions{})
	gate := &gatedService{Service: e.svc, entered: make(chan struct{}), release: make(chan struct{})}
	srv := New(gate, Options{Region: testRegion, AccessKeys: []hostconfig.AccessKey{{ID: accessKeyID, Secret: secretKey}}})
	cert, _, err := LoadOrCreateCertificate("", "", filepath.Join(t.TempDir(), "tls"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := mustListen(t)
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeHTTPS(ctx, addr, TLSConfig(cert)) }()
	gw := &env{t: t, url: "https://" + addr, roots: x509.NewCertPool(), region: testRegion}
	gw.roots.AddCert(mustParse(t, cert.Certificate[0]))

	type result struct {
		out *workspaces.DescribeWorkspacesOutput
		err error
	}
	got := make(chan result, 1)
	go func() {
		var r result
		for i := 0; i < 100; i++ { // until the listener is up
			r.out, r.err = gw.client(accessKeyID, secretKey).DescribeWorkspaces(context.Background(), &workspaces.DescribeWorkspacesInput{})
			var oe *net.OpError
			if !errors.As(r.err, &oe) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		got <- r
	}()
	select {
	case <-gate.entered:
	case r := <-got:
		t.Fatalf("the call finished without reaching the service: %v", r.err)
	case <-time.After(10 * time.Second):
		t.Fatal("the call never reached the service")
	}
	cancel()
	select {
	case err := <-done:
		t.Fatalf("ServeHTTPS returned (%v) with a call in flight", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(gate.release)
	if r := <-got; r.err != nil {
		t.Errorf("in-flight call: %v", r.err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeHTTPS: %v", err)
		}
	case <-time.After(ShutdownTimeout + 5*time.Second):
		t.Fatal("ServeHTTPS did not return after shutdown")
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Errorf("still listening after shutdown")
	}
	if err := srv.ServeTLSListener(context.Background(), mustListen(t), nil); err == nil {
		t.Errorf("ServeTLSListener without a TLS configuration returned nil")
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustListen(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}
