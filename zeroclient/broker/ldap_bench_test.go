package broker_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/internal/testsvc"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

// fakeHostd answers DescribeWorkspaces on a unix socket in hostd's protocol (AWS JSON 1.1),
// with one AVAILABLE WorkSpace for every user: the SDK client and its socket are exercised,
// hostd's own work is not (the end-to-end test has the real hostd).
func fakeHostd(t testing.TB) string {
	sock := filepath.Join(t.TempDir(), "hostd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		io.WriteString(w, `{"Workspaces":[{"WorkspaceId":"ws-alice00001","DirectoryId":"d-0123456789","UserName":"alice",`+
			`"State":"AVAILABLE","WorkspaceProperties":{"RunningMode":"AUTO_STOP","Protocols":["PCOIP"]}}]}`)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// BenchmarkLoginLDAPRADIUS is the end-to-end test's login figure without a WorkSpace VM:
// hello → connect info against a real slapd and a real FreeRADIUS (PIN, Access-Challenge,
// token code), the WorkSpace from a stand-in hostd, access events to a log and a webhook,
// a new TLS connection per login; against the same 6 round trips on a new TLS connection
// to a minimal HTTPS server with the broker's certificate, interleaved in the same run.
func BenchmarkLoginLDAPRADIUS(b *testing.B) {
	const pin, code, alicePW = "4321", "246810", "Corr3ct-Horse!"
	ldap := testsvc.Slapd(b, "corp.example.com", []testsvc.LDAPUser{{UID: "alice", Password: alicePW}})
	rad := testsvc.FreeRADIUS(b, testsvc.RADIUSConfig{Challenges: map[string]testsvc.Challenge{"alice": {PIN: pin, Code: code}}})
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.Copy(io.Discard, r.Body) }))
	defer hook.Close()
	dir := b.TempDir()
	port := catalog.Port(rad.Port)
	cfg := &hostconfig.Config{
		Hostd: hostconfig.Hostd{DataDir: dir},
	}
	dirs := []catalog.Directory{{
		ID: "d-0123456789", Name: "corp.example.com", Users: users("alice"),
		Login: catalog.Login{Type: catalog.TypeLDAP, NetBIOSName: "CORP",
			LDAP: &catalog.LDAP{URL: ldap.URL, StartTLS: true, CAFile: ldap.CAFile, BindDN: ldap.ServiceDN, BindPassword: ldap.ServicePassword,
				UserBase: ldap.UserBase, UserAttribute: "uid", UserFilter: "(objectClass=inetOrgPerson)"},
			MFA: &catalog.MFA{Type: catalog.MFARADIUS, RADIUS: &catalog.RADIUS{Servers: catalog.ServerList{"127.0.0.1"},
				Port: port, SharedSecret: rad.Secret}}},
	}}
	cfg = &hostconfig.Config{
		Hostd: cfg.Hostd,
		Zeroclient: hostconfig.Zeroclient{
			Broker: hostconfig.ZeroclientBroker{Listen: "127.0.0.1:0", Hostname: "localhost"}, Gateway: hostconfig.ZeroclientGateway{Listen: "127.0.0.1:0"},
			Echo: hostconfig.ZeroclientEcho{Listen: []string{}}, TLS: hostconfig.ZeroclientTLS{SelfSignedDir: filepath.Join(dir, "tls")},
			CredentialStore: filepath.Join(dir, "creds.db"), AuthFailureFloor: hostconfig.Duration{Duration: 200 * time.Millisecond},
			Events:      hostconfig.ZeroclientEvents{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl"), Webhook: hook.URL},
			HostdSocket: fakeHostd(b),
		},
	}
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), server.Options{Workspaces: workspaces.Dial(cfg.Zeroclient.HostdSocket), Catalog: server.StaticCatalog(dirs)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	tlsCfg, err := client.TLSConfig(filepath.Join(dir, "tls", "ca.pem"), "127.0.0.1")
	if err != nil {
		b.Fatal(err)
	}

	bare := bareRoundTrips(b, dir, tlsCfg, 6)
	flow := func() time.Duration {
		start := time.Now()
		c, err := client.NewBroker("https://"+s.BrokerAddr, tlsCfg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Hello(client.Identity); err != nil {
			b.Fatal(err)
		}
		if err := c.Login("alice", alicePW, "", []string{pin, code}, nil); err != nil {
			b.Fatal(err)
		}
		rs, err := c.Resources()
		if err != nil || len(rs) != 1 {
			b.Fatalf("resources: %v", err)
		}
		if _, err := c.Allocate(rs[0].ID); err != nil {
			b.Fatal(err)
		}
		d := time.Since(start)
		c.CloseIdle()
		return d
	}
	measureAgainstBare(b, flow, bare)
}
