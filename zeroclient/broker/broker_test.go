package broker_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/certs"
	"deskhost/internal/hostconfig"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/workspaces"
)

// staticWorkspaces answers the broker's WorkSpace questions from a map. The broker's own
// treatment of WorkSpace states is pure logic (Decide, tested below); the end-to-end test
// drives it against the real hostd.
type staticWorkspaces map[string]workspaces.Workspace

func (s staticWorkspaces) ForUser(_ context.Context, dir, user string) (workspaces.Workspace, bool, error) {
	w, ok := s[dir+"/"+user]
	return w, ok, nil
}
func (s staticWorkspaces) Describe(_ context.Context, id string) (workspaces.Workspace, error) {
	for _, w := range s {
		if w.ID == id {
			return w, nil
		}
	}
	return workspaces.Workspace{}, io.EOF
}
func (s staticWorkspaces) Start(context.Context, string) error { return nil }

const pw = "Corr3ct-Horse!"

type rig struct {
	t      testing.TB
	srv    *server.Server
	dir    string
	base   string
	tlsCfg *tls.Config
	creds  *credstore.Store
	logs   *logBuffer // the server's log
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func users(names ...string) []catalog.User {
	var us []catalog.User
	for _, n := range names {
		us = append(us, catalog.User{UserName: n})
	}
	return us
}

func src(s string) catalog.IPSource {
	p, _ := catalog.ParseIPSource(s)
	return catalog.IPSource{Prefix: p}
}

func newRig(t testing.TB) *rig { return newRigWith(t, server.Options{}) }

// newRigWith is newRig with options; without Workspaces, the static ones below.
func newRigWith(t testing.TB, opt server.Options) *rig { return newRigConfig(t, opt, nil) }

// newRigConfig is newRigWith with the host config changed by edit first.
func newRigConfig(t testing.TB, opt server.Options, edit func(*hostconfig.Config)) *rig {
	dir := t.TempDir()
	dirs := []catalog.Directory{
		{ID: "d-0000000001", Name: "corp.example.com", RegistrationCode: "SLiad+CORP", Users: users("alice", "bob", "carol", "dave"),
			Login: catalog.Login{MFA: &catalog.MFA{Type: catalog.MFATOTP}}},
		{ID: "d-0000000002", Name: "office.example.com", Users: users("erin"),
			Login: catalog.Login{IPGroups: []catalog.IPGroup{{ID: "wsipg-a1bcd2efg", Rules: []catalog.IPRule{{Source: src("203.0.113.0/24")}}}}}},
		{ID: "d-0000000003", Name: "empty.example.com", Users: users("frank"),
			Login: catalog.Login{IPGroups: []catalog.IPGroup{{ID: "wsipg-b1bcd2efg"}}}},
		{ID: "d-0000000004", Name: "nozc.example.com", Users: users("gina"),
			Login: catalog.Login{DeviceAccess: catalog.DeviceAccess{ZeroClient: catalog.Deny}}},
		{ID: "d-0000000005", Name: "setup.example.com", Users: users("hank"),
			Login: catalog.Login{MFA: &catalog.MFA{Type: catalog.MFARADIUS, Status: catalog.MFACreating,
				RADIUS: &catalog.RADIUS{Servers: catalog.ServerList{"127.0.0.1"}, SharedSecret: "x"}}}},
		{ID: "d-0000000006", Name: "gone.example.com", RegistrationCode: "SLiad+GONE", Users: users("ivan"),
			Login: catalog.Login{Deregistered: true}},
		{ID: "d-0000000007", Name: "plain.example.com", Users: users("paul")},
	}
	cfg := &hostconfig.Config{
		Hostd: hostconfig.Hostd{DataDir: dir},
		Zeroclient: hostconfig.Zeroclient{
			Broker: hostconfig.ZeroclientBroker{Listen: "127.0.0.1:0", Hostname: "localhost"}, Gateway: hostconfig.ZeroclientGateway{Listen: "127.0.0.1:0"},
			Echo: hostconfig.ZeroclientEcho{Listen: []string{}}, TLS: hostconfig.ZeroclientTLS{SelfSignedDir: filepath.Join(dir, "tls")},
			CredentialStore: filepath.Join(dir, "creds.db"), AuthFailureFloor: hostconfig.Duration{Duration: 150 * time.Millisecond},
			Events: hostconfig.ZeroclientEvents{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl")},
		},
	}
	if edit != nil {
		edit(cfg)
	}
	backend := staticWorkspaces{"d-0000000001/alice": {ID: "ws-alice00001", State: "AVAILABLE", Protocol: "PCOIP"},
		"d-0000000007/paul": {ID: "ws-paul000001", State: "AVAILABLE", Protocol: "PCOIP"}}
	if opt.Workspaces == nil {
		opt.Workspaces = backend
	}
	if opt.Catalog == nil {
		opt.Catalog = server.StaticCatalog(dirs)
	}
	logs := &logBuffer{}
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tlsCfg, err := client.TLSConfig(filepath.Join(dir, "tls", "ca.pem"), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{t: t, srv: s, dir: dir, base: "https://" + s.BrokerAddr, tlsCfg: tlsCfg, logs: logs}
	// The store is the server's; give the other users passwords through it.
	r.creds = s.Creds()
	hash, _ := credstore.HashPassword(pw)
	for _, u := range []struct{ d, n string }{{"d-0000000001", "bob"}, {"d-0000000001", "carol"}, {"d-0000000001", "dave"},
		{"d-0000000002", "erin"}, {"d-0000000003", "frank"}, {"d-0000000004", "gina"}, {"d-0000000005", "hank"}, {"d-0000000007", "paul"}} {
		if err := r.creds.SetCredential(u.d, u.n, credstore.Credential{Hash: hash}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

func (r *rig) broker() *client.Broker {
	b, err := client.NewBroker(r.base, r.tlsCfg)
	if err != nil {
		r.t.Fatal(err)
	}
	return b
}

func (r *rig) login(ci brokerxml.ClientInfo, user, password, domain string) (*client.Broker, brokerxml.AuthenticateResp) {
	b := r.broker()
	if _, err := b.Hello(ci); err != nil {
		r.t.Fatal(err)
	}
	var resp brokerxml.AuthenticateResp
	if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: user, Password: password, Domain: domain}, &resp); err != nil {
		r.t.Fatal(err)
	}
	return b, resp
}

func post(t *testing.T, hc *http.Client, url, ct, body string, cookie *http.Cookie) *http.Response {
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestActivationTOTPAndLogin: the invitation's activation sets the first password (the
// policy refuses a weak one and changes nothing), enrolls TOTP; then the MFA login.
func TestActivationTOTPAndLogin(t *testing.T) {
	r := newRig(t)
	code, _, err := r.srv.Broker.Invite("d-0000000001", "Alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.srv.Broker.Invite("d-0000000001", "mallory", time.Hour); err == nil {
		t.Error("invited a user the directory does not have")
	}
	b := r.broker()
	if _, err := b.Activate(code, "abcdefgh"); err == nil || !strings.Contains(err.Error(), "HTTP 400") {
		t.Fatalf("weak password: %v", err)
	}
	res, err := b.Activate(code, pw)
	if err != nil {
		t.Fatalf("activation with the same code after a refused password: %v", err)
	}
	if res.UserName != "alice" || res.TOTPSecret == "" || !strings.HasPrefix(res.TOTPURI, "otpauth://totp/") {
		t.Fatalf("activation: %+v", res)
	}
	if _, err := b.Activate(code, pw); err == nil {
		t.Error("an activation code worked twice")
	}
	// Login: password, then TOTP.
	b, resp := r.login(client.Identity, "alice", pw, "corp.example.com")
	if resp.Result.ID != brokerxml.AuthIncomplete || resp.NextAuth == nil || resp.NextAuth.Methods[0] != brokerxml.AuthMethodPasscode {
		t.Fatalf("password step: %+v", resp)
	}
	var r2 brokerxml.AuthenticateResp
	b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: "alice", Passcode: "000000"}, &r2)
	if r2.Result.ID != brokerxml.AuthFailedPasscode {
		t.Fatalf("wrong code: %+v", r2)
	}
	// After a wrong code the login starts again from the password.
	b, _ = r.login(client.Identity, `CORP\alice`, pw, "")
	code6, _ := auth.TOTPCode(res.TOTPSecret, time.Now())
	r2 = brokerxml.AuthenticateResp{}
	b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: `CORP\alice`, Passcode: code6}, &r2)
	if r2.Result.ID != brokerxml.AuthComplete {
		t.Fatalf("right code: %+v", r2)
	}
	rs, err := b.Resources()
	if err != nil || len(rs) != 1 || rs[0].ID != "ws-alice00001" || rs[0].Type.SessionType != "VDI" || rs[0].Type.Value != "DESKTOP" {
		t.Fatalf("resources: %+v %v", rs, err)
	}
	alloc, err := b.Allocate(rs[0].ID)
	if err != nil || alloc.Target.Port == 0 || len(alloc.Target.ConnectTag) != 22 {
		t.Fatalf("allocate: %+v %v", alloc, err)
	}
	// The same TOTP code is not accepted twice.
	b, _ = r.login(client.Identity, "alice", pw, "corp.example.com")
	r2 = brokerxml.AuthenticateResp{}
	b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: "alice", Passcode: code6}, &r2)
	if r2.Result.ID == brokerxml.AuthComplete {
		t.Error("a TOTP code was accepted twice")
	}
}

// TestUnknownUserLooksLikeWrongPassword: same result, same message, same time. The times
// are compared pair by pair (an unknown user and a wrong password one right after the
// other, in alternating order), so that load from other tests running at the same time
// (the server package's 300-login test saturates the CPU for seconds) falls on both sides
// of a pair alike.
func TestUnknownUserLooksLikeWrongPassword(t *testing.T) {
	r := newRig(t)
	var unknown, wrong []time.Duration
	var ratios []float64
	var ids, msgs []string
	attempt := func(user, password string) time.Duration {
		b := r.broker()
		b.Hello(client.Identity)
		start := time.Now()
		var resp brokerxml.AuthenticateResp
		b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: user, Password: password, Domain: "corp.example.com"}, &resp)
		d := time.Since(start)
		ids, msgs = append(ids, resp.Result.ID), append(msgs, resp.Result.Str)
		return d
	}
	for i := 0; i < 12; i++ { // fewer than 5 failures per user, so no lockout
		user := []string{"bob", "carol", "dave"}[i%3]
		var w, u time.Duration
		if i%2 == 0 {
			w = attempt(user, "Wrong-Passw0rd")
			u = attempt(fmt.Sprintf("nobody%02d", i), "Wrong-Passw0rd")
		} else {
			u = attempt(fmt.Sprintf("nobody%02d", i), "Wrong-Passw0rd")
			w = attempt(user, "Wrong-Passw0rd")
		}
		wrong, unknown, ratios = append(wrong, w), append(unknown, u), append(ratios, float64(u)/float64(w))
	}
	for i := range ids {
		if ids[i] != brokerxml.AuthFailed || msgs[i] != msgs[0] {
			t.Fatalf("results differ: %v %v", ids, msgs)
		}
	}
	mu, mw := median(unknown), median(wrong)
	slices.Sort(ratios)
	ratio := ratios[len(ratios)/2]
	t.Logf("median unknown user %s, wrong password %s; median ratio of pairs %.2f", mu, mw, ratio)
	if ratio < 0.8 || ratio > 1.25 {
		t.Errorf("unknown user %s vs wrong password %s (pairs' median ratio %.2f): timing tells them apart", mu, mw, ratio)
	}
	if mu < 150*time.Millisecond || mw < 150*time.Millisecond {
		t.Errorf("a failure took less than the floor")
	}
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestLockout: 5 failures lock the user at that address out; the right password is then
// refused too; an unknown name locks the same way.
func TestLockout(t *testing.T) {
	r := newRig(t)
	for _, user := range []string{"dave", "zed"} {
		for i := 0; i < 5; i++ {
			if _, resp := r.login(client.Identity, user, "Wrong-Passw0rd", "corp.example.com"); resp.Result.ID != brokerxml.AuthFailed {
				t.Fatalf("%s attempt %d: %+v", user, i+1, resp)
			}
		}
		if _, resp := r.login(client.Identity, user, pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthFailedLocked {
			t.Errorf("%s after 5 failures: %+v", user, resp)
		}
	}
	if _, resp := r.login(client.Identity, "bob", pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthIncomplete {
		t.Errorf("another user is affected: %+v", resp)
	}
}

// TestPolicyRefusals: IP access control groups (a rule, an empty group), device types,
// firmware, MFA being set up.
func TestPolicyRefusals(t *testing.T) {
	r := newRig(t)
	zc := client.Identity
	linux := brokerxml.ClientInfo{ProductName: "Teradici PCoIP Desktop Client", ProductVersion: "20.10", Platform: "Ubuntu 18.04 Linux x86_64", Hostname: "pc"}
	oldFW := zc
	oldFW.ProductVersion = "4.5.2"
	for _, tc := range []struct {
		name         string
		ci           brokerxml.ClientInfo
		user, domain string
		id, msg      string
	}{
		{"IP not in the group's rule", zc, "erin", "office.example.com", brokerxml.AuthFailedDenied, broker.MsgNotAuthorized},
		{"empty IP group", zc, "frank", "empty.example.com", brokerxml.AuthFailedDenied, broker.MsgNotAuthorized},
		{"zero clients turned off", zc, "gina", "nozc.example.com", brokerxml.AuthFailedDenied, broker.MsgNotAuthorized},
		{"Linux clients denied by default", linux, "bob", "corp.example.com", brokerxml.AuthFailedDenied, broker.MsgNotAuthorized},
		{"firmware older than 4.6.0", oldFW, "bob", "corp.example.com", brokerxml.AuthFailedDenied, broker.MsgNotAuthorized},
		{"MFA being set up", zc, "hank", "setup.example.com", brokerxml.AuthFailedMFASetup, broker.MsgMFASetup},
		{"deregistered directory", zc, "ivan", "gone.example.com", brokerxml.AuthFailed, broker.MsgBadLogin},
	} {
		_, resp := r.login(tc.ci, tc.user, pw, tc.domain)
		if resp.Result.ID != tc.id || resp.Result.Str != tc.msg {
			t.Errorf("%s: %+v, want %s %q", tc.name, resp.Result, tc.id, tc.msg)
		}
	}
	if r.srv.Broker == nil {
		t.Fatal("no broker")
	}
	// The message is exactly the guide's.
	if broker.MsgNotAuthorized != "This device is not authorized to access the WorkSpace. Please contact your administrator for assistance." {
		t.Error("the IP-denial message is not the guide's")
	}
	// The same user from an allowed address gets in: the group allows 203.0.113.0/24.
	d := r.srv.Auth.ByID("d-0000000002")
	if !d.Login.IPAllowed(netip.MustParseAddr("203.0.113.7")) {
		t.Error("an address in the rule is refused")
	}
}

// TestBadInputChangesNothing: malformed requests get the right HTTP status and leave the
// session where it was; a message in the wrong state gets its -resp with a
// not-authenticated result.
func TestBadInputChangesNothing(t *testing.T) {
	r := newRig(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg}}
	xmlURL := r.base + "/pcoip-broker/xml"
	hello, _ := brokerxml.Encode(&brokerxml.Hello{ClientInfo: client.Identity})
	resp := post(t, hc, xmlURL, "application/xml", string(hello), nil)
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == broker.CookieName {
			cookie = c
		}
	}
	if cookie == nil || !cookie.Secure || !cookie.HttpOnly {
		t.Fatalf("session cookie: %+v", resp.Cookies())
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("response not chunked: %v", resp.TransferEncoding)
	}
	resp.Body.Close()
	for _, tc := range []struct {
		method, ct, body string
		status           int
	}{
		{http.MethodGet, "", "", http.StatusMethodNotAllowed},
		{http.MethodPost, "text/plain", `<pcoip-client version="2.1"><bye/></pcoip-client>`, http.StatusUnsupportedMediaType},
		{http.MethodPost, "application/xml", strings.Repeat("x", 64<<10+1), http.StatusRequestEntityTooLarge},
		{http.MethodPost, "application/xml", "not xml", http.StatusBadRequest},
		{http.MethodPost, "application/xml", `<wrong version="2.1"><bye/></wrong>`, http.StatusBadRequest},
		{http.MethodPost, "application/xml", `<pcoip-client version="2.1"><bye/><bye/></pcoip-client>`, http.StatusBadRequest},
		{http.MethodPost, "application/xml", `<pcoip-client><bye/></pcoip-client>`, http.StatusBadRequest},
		{http.MethodPost, "application/xml", `<pcoip-client version="2.1"><reboot/></pcoip-client>`, http.StatusBadRequest},
	} {
		req, _ := http.NewRequest(tc.method, xmlURL, strings.NewReader(tc.body))
		if tc.ct != "" {
			req.Header.Set("Content-Type", tc.ct)
		}
		req.AddCookie(cookie)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s %.30q: HTTP %d, want %d", tc.method, tc.ct, tc.body, resp.StatusCode, tc.status)
		}
		if len(resp.Cookies()) != 0 {
			t.Errorf("%.30q: a bad request touched the session cookie", tc.body)
		}
	}
	// Wrong state: listing before logging in.
	list, _ := brokerxml.Encode(&brokerxml.GetResourceList{})
	resp = post(t, hc, xmlURL, "application/xml", string(list), cookie)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var lr brokerxml.GetResourceListResp
	if err := brokerxml.DecodeResponse(body, &lr); err != nil || lr.Result.ID != brokerxml.ListNotAuthed {
		t.Errorf("list before login: %+v %v", lr, err)
	}
	// The session is still at hello: a password login on it works.
	auth, _ := brokerxml.Encode(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: "bob", Password: pw, Domain: "corp.example.com"})
	resp = post(t, hc, xmlURL, "application/xml; charset=UTF-8", string(auth), cookie)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var ar brokerxml.AuthenticateResp
	if err := brokerxml.DecodeResponse(body, &ar); err != nil || ar.Result.ID != brokerxml.AuthIncomplete {
		t.Errorf("login on the session after bad requests: %+v %v", ar, err)
	}
	// Plain HTTP is refused.
	pr, err := http.Post("http://"+r.srv.BrokerAddr+"/pcoip-broker/xml", "application/xml", bytes.NewReader(hello))
	if err != nil {
		t.Fatal(err)
	}
	pr.Body.Close()
	if pr.StatusCode != http.StatusBadRequest || len(pr.Cookies()) != 0 {
		t.Errorf("plain HTTP: %d", pr.StatusCode)
	}
	// Only TLS 1.2+ with ECDHE.
	if _, err := tls.Dial("tcp", r.srv.BrokerAddr, &tls.Config{RootCAs: r.tlsCfg.RootCAs, ServerName: "127.0.0.1",
		MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_RSA_WITH_AES_128_GCM_SHA256}}); err == nil {
		t.Error("a non-ECDHE TLS 1.2 suite was accepted")
	}
	if _, err := tls.Dial("tcp", r.srv.BrokerAddr, &tls.Config{RootCAs: r.tlsCfg.RootCAs, ServerName: "127.0.0.1", MaxVersion: tls.VersionTLS11}); err == nil {
		t.Error("TLS 1.1 was accepted")
	}
}

// TestProbeRegistrationBye: a QueryBrokerClient hello makes no session; registration codes
// answer with the directory's settings, or the guide's error; bye ends the session.
func TestProbeRegistrationBye(t *testing.T) {
	r := newRig(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg}}
	probe, _ := brokerxml.Encode(&brokerxml.Hello{ClientInfo: brokerxml.ClientInfo{ProductName: broker.ProbeProduct}})
	resp := post(t, hc, r.base+"/pcoip-broker/xml", "application/xml", string(probe), nil)
	resp.Body.Close()
	if len(resp.Cookies()) != 0 {
		t.Error("a probe hello made a session")
	}
	for _, tc := range []struct {
		code   string
		status int
	}{{"SLiad+CORP", 200}, {"sliad+corp", 200}, {"SLiad+NOPE", 404}, {"SLiad+GONE", 404}, {"", 404}} {
		body, _ := json.Marshal(map[string]string{"registrationCode": tc.code})
		resp := post(t, hc, r.base+"/registration", "application/json", string(body), nil)
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("code %q: HTTP %d", tc.code, resp.StatusCode)
		}
		if tc.status == 404 && out["error"] != broker.MsgRegistration {
			t.Errorf("code %q: %v", tc.code, out)
		}
		if tc.status == 200 {
			mfa, _ := out["mfa"].(map[string]any)
			dev, _ := out["deviceTypes"].(map[string]any)
			if out["directoryId"] != "d-0000000001" || mfa["enabled"] != true || dev["zeroclient"] != true || dev["web"] != false {
				t.Errorf("registration: %v", out)
			}
		}
	}
	form := post(t, hc, r.base+"/registration", "application/x-www-form-urlencoded", url.Values{"registrationCode": {"SLiad+CORP"}}.Encode(), nil)
	form.Body.Close()
	if form.StatusCode != 200 {
		t.Errorf("form registration: %d", form.StatusCode)
	}
	b, resp2 := r.login(client.Identity, "bob", pw, "corp.example.com")
	if resp2.Result.ID != brokerxml.AuthIncomplete {
		t.Fatal(resp2)
	}
	if err := b.Bye(); err != nil {
		t.Fatal(err)
	}
	var ar brokerxml.AuthenticateResp
	b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: "bob", Passcode: "123456"}, &ar)
	if ar.Result.ID != brokerxml.AuthFailedNotAuthed {
		t.Errorf("after bye: %+v", ar)
	}
}

// TestDecide is allocate-resource's rule for each WorkSpace state (catalog §2.5, §18, §19).
func TestDecide(t *testing.T) {
	ws := func(state, mode, proto string) workspaces.Workspace {
		return workspaces.Workspace{ID: "ws-1", State: state, RunningMode: mode, Protocol: proto}
	}
	for _, tc := range []struct {
		w      workspaces.Workspace
		device catalog.DeviceType
		act    broker.Action
		id     string
		msg    string
	}{
		{ws("AVAILABLE", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Issue, "", ""},
		{ws("STOPPED", "AUTO_STOP", "PCOIP"), catalog.DeviceZeroClient, broker.Start, "", ""},
		{ws("STOPPED", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Refuse, brokerxml.AllocFailed, broker.MsgLaunchError},
		{ws("STARTING", "AUTO_STOP", "PCOIP"), catalog.DeviceZeroClient, broker.Wait, "", ""},
		{ws("PENDING", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Wait, "", ""},
		{ws("UNHEALTHY", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Refuse, brokerxml.AllocUnhealthy,
			"WorkSpace Status: Unhealthy. We were unable to connect you to your WorkSpace. Please try again in a few minutes."},
		{ws("ADMIN_MAINTENANCE", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Refuse, brokerxml.AllocMaintenance, broker.MsgMaintenance},
		{ws("AVAILABLE", "ALWAYS_ON", "WSP"), catalog.DeviceZeroClient, broker.Refuse, brokerxml.AllocNotOnDevice, broker.MsgNotOnDevice},
		{ws("AVAILABLE", "ALWAYS_ON", "WSP"), catalog.DeviceWindows, broker.Issue, "", ""},
		{ws("ERROR", "ALWAYS_ON", "PCOIP"), catalog.DeviceZeroClient, broker.Refuse, brokerxml.AllocFailed, broker.MsgLaunchError},
	} {
		act, id, msg := broker.Decide(tc.w, tc.device)
		if act != tc.act || id != tc.id || msg != tc.msg {
			t.Errorf("%s/%s/%s on %s: %v %s %q", tc.w.State, tc.w.RunningMode, tc.w.Protocol, tc.device, act, id, msg)
		}
	}
}

// BenchmarkLogin: hello → connect info for a local-directory user (argon2id, no MFA; a new
// TLS connection per login: hello, authenticate, get-resource-list, allocate-resource)
// against the same 4 round trips on a new TLS connection to a minimal HTTPS server, in the
// same run. The argon2id hash is deliberate work (tens of ms); the end-to-end test reports
// the LDAP + RADIUS figure.
func BenchmarkLogin(b *testing.B) {
	r := newRig(b)
	bare := bareRoundTrips(b, r.dir, r.tlsCfg, 4)
	flow := func() time.Duration {
		start := time.Now()
		c := r.broker()
		c.Hello(client.Identity)
		if err := c.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
			b.Fatal(err)
		}
		rs, err := c.Resources()
		if err != nil {
			b.Fatal(err)
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

// bareRoundTrips is the login benchmarks' baseline: n HTTPS round trips on a new TLS
// connection to a minimal server that answers every request with bye-resp, using the
// broker's certificate (kept in dir/tls) and TLS settings.
func bareRoundTrips(b *testing.B, dir string, clientTLS *tls.Config, n int) func() time.Duration {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls", certs.CertFile), filepath.Join(dir, "tls", certs.KeyFile))
	if err != nil {
		b.Fatal(err)
	}
	l, err := tls.Listen("tcp", "127.0.0.1:0", certs.ServerConfig(cert))
	if err != nil {
		b.Fatal(err)
	}
	reply, _ := brokerxml.Encode(&brokerxml.ByeResp{})
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.Write(reply)
	}), TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
	go srv.Serve(l)
	b.Cleanup(func() { srv.Close() })
	url := "https://" + l.Addr().String() + "/pcoip-broker/xml"
	return func() time.Duration {
		start := time.Now()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: clientTLS}}
		for i := 0; i < n; i++ {
			resp, err := hc.Post(url, "application/xml", strings.NewReader(`<pcoip-client version="2.1"><bye/></pcoip-client>`))
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		hc.CloseIdleConnections()
		return time.Since(start)
	}
}

// measureAgainstBare times flow (a login) and bare (the same number of bare TLS round
// trips) alternately, b.N times each after one warm-up, so that both see the same load,
// and reports their p50 and p99, logins per second and the ratios.
func measureAgainstBare(b *testing.B, flow, bare func() time.Duration) {
	flow()
	bare()
	var flows, bares []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		flows = append(flows, flow())
		bares = append(bares, bare())
	}
	b.StopTimer()
	var ft time.Duration
	for _, d := range flows {
		ft += d
	}
	p := func(ds []time.Duration, q int) time.Duration {
		s := slices.Clone(ds)
		slices.Sort(s)
		return s[(len(s)-1)*q/100]
	}
	b.ReportMetric(float64(p(flows, 50).Microseconds())/1000, "login-p50-ms")
	b.ReportMetric(float64(p(flows, 99).Microseconds())/1000, "login-p99-ms")
	b.ReportMetric(float64(p(bares, 50).Microseconds())/1000, "bare-p50-ms")
	b.ReportMetric(float64(p(bares, 99).Microseconds())/1000, "bare-p99-ms")
	b.ReportMetric(float64(len(flows))/ft.Seconds(), "logins/s")
	b.ReportMetric(float64(p(flows, 50))/float64(p(bares, 50)), "ratio-p50")
	b.ReportMetric(float64(p(flows, 99))/float64(p(bares, 99)), "ratio-p99")
}

// countingWorkspaces is one WorkSpace whose state a test changes, counting hostd's lookups.
type countingWorkspaces struct {
	mu      sync.Mutex
	ws      workspaces.Workspace
	forUser int
}

func (c *countingWorkspaces) ForUser(context.Context, string, string) (workspaces.Workspace, bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.forUser++
	return c.ws, true, nil
}
func (c *countingWorkspaces) Describe(context.Context, string) (workspaces.Workspace, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ws, nil
}
func (c *countingWorkspaces) Start(context.Context, string) error { return nil }
func (c *countingWorkspaces) set(state string) {
	c.mu.Lock()
	c.ws.State = state
	c.mu.Unlock()
}
func (c *countingWorkspaces) calls() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.forUser
}

// clock is a settable time for the server.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestWorkspaceLookup: one login asks hostd about the WorkSpace once (started when the
// password is accepted; get-resource-list and allocate-resource use that answer while it
// is fresh); after that, allocate-resource asks again and acts on the state as it is.
func TestWorkspaceLookup(t *testing.T) {
	ws := &countingWorkspaces{ws: workspaces.Workspace{ID: "ws-paul000001", State: "AVAILABLE", Protocol: "PCOIP"}}
	clk := &clock{t: time.Now()}
	r := newRigWith(t, server.Options{Workspaces: ws, Now: clk.now})
	b := r.broker()
	b.Hello(client.Identity)
	if err := b.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
		t.Fatal(err)
	}
	rs, err := b.Resources()
	if err != nil || len(rs) != 1 || rs[0].State != "AVAILABLE" {
		t.Fatalf("resources: %+v %v", rs, err)
	}
	if _, err := b.Allocate(rs[0].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Allocate(rs[0].ID); err != nil {
		t.Fatal(err)
	}
	if n := ws.calls(); n != 1 {
		t.Errorf("%d hostd lookups for one login, its list and two allocations", n)
	}
	// Later, the WorkSpace has changed: allocate-resource sees it.
	ws.set("ADMIN_MAINTENANCE")
	clk.add(3 * time.Second)
	a, err := b.Allocate(rs[0].ID)
	if err == nil || a.Result.ID != brokerxml.AllocMaintenance {
		t.Errorf("allocation after the WorkSpace went into maintenance: %+v %v", a, err)
	}
	if n := ws.calls(); n != 2 {
		t.Errorf("%d hostd lookups, want 2", n)
	}
	// A new login looks again.
	ws.set("AVAILABLE")
	b = r.broker()
	b.Hello(client.Identity)
	if err := b.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
		t.Fatal(err)
	}
	if rs, err := b.Resources(); err != nil || rs[0].State != "AVAILABLE" {
		t.Fatalf("resources: %+v %v", rs, err)
	}
	if n := ws.calls(); n != 3 {
		t.Errorf("%d hostd lookups, want 3", n)
	}
}

// routedWorkspaces is a WorkSpace another host of the fleet runs: hostd says it is not
// local and hands out the owning host's gateway's tag (or fails to).
type routedWorkspaces struct {
	countingWorkspaces
	err  error
	reqs []workspaces.TagRequest
}

func (r *routedWorkspaces) Local(context.Context, string) (bool, error) { return false, nil }
func (r *routedWorkspaces) RemoteTag(_ context.Context, q workspaces.TagRequest) (workspaces.Grant, error) {
	r.reqs = append(r.reqs, q)
	if r.err != nil {
		return workspaces.Grant{}, r.err
	}
	return workspaces.Grant{ConnectTag: "remote-tag-0123456789ab", SessionID: q.SessionID, Gateway: "10.77.0.3:4172",
		Hostname: "fleet3.test", HostID: "host-0000000003"}, nil
}

// TestAllocateRoutesToOwningHost: a WorkSpace another host runs is allocated with that
// host's gateway and the tag its gateway issued (for this user, WorkSpace and client
// address), and no tag of this host's own; when the owner cannot be reached, the guide's
// launch error. The real path (hostd, the fleet port, the owner's zeroclient) is TestFleet's.
func TestAllocateRoutesToOwningHost(t *testing.T) {
	ws := &routedWorkspaces{countingWorkspaces: countingWorkspaces{ws: workspaces.Workspace{ID: "ws-paul000001", State: "AVAILABLE", Protocol: "PCOIP"}}}
	r := newRigWith(t, server.Options{Workspaces: ws})
	b := r.broker()
	b.Hello(client.Identity)
	if err := b.Login("paul", pw, "plain.example.com", nil, nil); err != nil {
		t.Fatal(err)
	}
	a, err := b.Allocate("ws-paul000001")
	if err != nil || a.Target == nil || a.Target.IPAddress != "10.77.0.3" || a.Target.Port != 4172 || a.Target.ConnectTag != "remote-tag-0123456789ab" ||
		a.Target.SNI != "fleet3.test" || a.Target.SessionID == "" {
		t.Fatalf("allocate: %+v %v", a, err)
	}
	if len(ws.reqs) != 1 || ws.reqs[0].UserName != "paul" || ws.reqs[0].DirectoryID != "d-0000000007" || ws.reqs[0].WorkspaceID != "ws-paul000001" ||
		!ws.reqs[0].Client.IsLoopback() || ws.reqs[0].SessionID != a.Target.SessionID {
		t.Errorf("tag requests: %+v", ws.reqs)
	}
	if n := r.srv.Tags.Outstanding(); n != 0 {
		t.Errorf("this host's gateway holds %d tags for a WorkSpace it does not run", n)
	}
	ws.err = io.ErrUnexpectedEOF
	if a, err := b.Allocate("ws-paul000001"); err == nil || a.Result.ID != brokerxml.AllocFailed || a.Target != nil {
		t.Errorf("owner unreachable: %+v %v", a, err)
	}
}
