package web_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/server"
	"deskhost/zeroclient/web"
	"deskhost/zeroclient/workspaces"
)

// TestVendoredNoVNC: the embedded noVNC is exactly what SHA256SUMS lists (written by
// vendornovnc from the tarball whose sha512 novnc.lock pins), of the lock's version.
func TestVendoredNoVNC(t *testing.T) {
	root := filepath.Join("static", "novnc")
	sums, err := os.ReadFile(filepath.Join(root, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(sums))
	for sc.Scan() {
		sum, name, ok := strings.Cut(sc.Text(), "  ")
		if !ok {
			t.Fatalf("SHA256SUMS line %q", sc.Text())
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if got := fmt.Sprintf("%x", sha256.Sum256(b)); got != sum {
			t.Errorf("%s: sha256 %s, SHA256SUMS says %s (edited by hand? run make novnc)", name, got, sum)
		}
		listed[name] = true
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(root, p)
			if rel = filepath.ToSlash(rel); rel != "SHA256SUMS" && !listed[rel] {
				t.Errorf("%s is not in SHA256SUMS", rel)
			}
		}
		return nil
	})
	var lock struct{ Version string }
	var pkg struct{ Name, Version string }
	b, _ := os.ReadFile("novnc.lock")
	json.Unmarshal(b, &lock)
	b, _ = os.ReadFile(filepath.Join(root, "package.json"))
	json.Unmarshal(b, &pkg)
	if pkg.Name != "@novnc/novnc" || lock.Version == "" || pkg.Version != lock.Version {
		t.Errorf("vendored %s@%s, lock %s", pkg.Name, pkg.Version, lock.Version)
	}
	if !listed["core/rfb.js"] {
		t.Error("core/rfb.js is not vendored")
	}
}

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

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *logBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

const pw = "Corr3ct-Horse!"

type rig struct {
	t      *testing.T
	base   string
	secret string
	logs   *logBuffer
	dir    string
}

// newRig runs the whole zeroclient (server.New) with three local directories: web access
// allowed with TOTP (amy), web access at its default (ned), web access allowed but an IP
// group without 127.0.0.1 (ivy). WorkSpaces come from a static table; there is no display
// behind them (the browser test streams a real one).
func newRig(t *testing.T) *rig {
	dir := t.TempDir()
	users := func(n string) []catalog.User { return []catalog.User{{UserName: n, Email: n + "@example.com"}} }
	dirs := []catalog.Directory{
		{ID: "d-00000000a1", Name: "web.example.com", RegistrationCode: "SLiad+WEBA", Users: users("amy"),
			Login: catalog.Login{MFA: &catalog.MFA{Type: catalog.MFATOTP}, DeviceAccess: catalog.DeviceAccess{Web: catalog.Allow}}},
		{ID: "d-00000000a2", Name: "noweb.example.com", RegistrationCode: "SLiad+NOWB", Users: users("ned")},
		{ID: "d-00000000a3", Name: "ipg.example.com", RegistrationCode: "SLiad+IPGR", Users: users("ivy"),
			Login: catalog.Login{DeviceAccess: catalog.DeviceAccess{Web: catalog.Allow},
				IPGroups: []catalog.IPGroup{{ID: "wsipg-a1bcd2efg", Rules: []catalog.IPRule{{Source: catalog.IPSource{Prefix: netip.MustParsePrefix("203.0.113.0/24")}}}}}}},
		{ID: "d-00000000a4", Name: "wsp.example.com", RegistrationCode: "SLiad+WSPW", Users: users("wes"),
			Login: catalog.Login{DeviceAccess: catalog.DeviceAccess{Web: catalog.Allow}}},
	}
	cfg := &hostconfig.Config{
		Hostd: hostconfig.Hostd{DataDir: dir},
		Zeroclient: hostconfig.Zeroclient{
			Broker: hostconfig.ZeroclientBroker{Listen: "127.0.0.1:0", Hostname: "localhost"}, Gateway: hostconfig.ZeroclientGateway{Listen: "127.0.0.1:0"},
			Echo: hostconfig.ZeroclientEcho{Listen: []string{}}, TLS: hostconfig.ZeroclientTLS{SelfSignedDir: filepath.Join(dir, "tls")},
			CredentialStore: filepath.Join(dir, "creds.db"), AuthFailureFloor: hostconfig.Duration{Duration: 50 * time.Millisecond},
			Events: hostconfig.ZeroclientEvents{Log: filepath.Join(dir, "access.jsonl"), AuditLog: filepath.Join(dir, "audit.jsonl")},
		},
	}
	ws := staticWorkspaces{"d-00000000a1/amy": {ID: "ws-amy0000001", State: "AVAILABLE", Protocol: "PCOIP"},
		"d-00000000a4/wes": {ID: "ws-wes0000001", State: "AVAILABLE", Protocol: "WSP"}}
	logs := &logBuffer{}
	s, err := server.New(cfg, slog.New(slog.NewTextHandler(logs, nil)), server.Options{Workspaces: ws, Catalog: server.StaticCatalog(dirs)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	hash, _ := credstore.HashPassword(pw)
	secret, _, _ := auth.NewTOTPSecret("test", "amy")
	for _, u := range []struct{ d, n string }{{"d-00000000a1", "amy"}, {"d-00000000a2", "ned"}, {"d-00000000a3", "ivy"}, {"d-00000000a4", "wes"}} {
		c := credstore.Credential{Hash: hash}
		if u.n == "amy" {
			c.TOTPSecret = secret
		}
		if err := s.Creds().SetCredential(u.d, u.n, c); err != nil {
			t.Fatal(err)
		}
	}
	return &rig{t: t, base: "https://" + s.BrokerAddr, secret: secret, logs: logs, dir: dir}
}

// browser is an HTTP client that keeps cookies and sends Origin as a browser does.
type browser struct {
	t      *testing.T
	hc     *http.Client
	base   string
	origin string
}

func (r *rig) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: r.t, base: r.base, origin: r.base, hc: &http.Client{Jar: jar,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

type resp struct {
	code int
	h    http.Header
	body string
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) resp {
	b.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, b.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost && b.origin != "" {
		req.Header.Set("Origin", b.origin)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer r.Body.Close()
	out, _ := io.ReadAll(r.Body)
	return resp{r.StatusCode, r.Header, string(out)}
}

// inlineRe finds inline script or style: a script element with content, a style attribute
// or element, an event handler attribute.
var inlineRe = regexp.MustCompile(`(?i)<script(\s[^>]*)?>\s*[^<\s]|<script>|\sstyle=|<style|\son[a-z]+=`)

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfOf(t *testing.T, body string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no CSRF token in the page:\n%s", body)
	}
	return m[1]
}

var errorRe = regexp.MustCompile(`id="error">([^<]*)<`)

func errorOf(body string) string {
	if m := errorRe.FindStringSubmatch(body); m != nil {
		return strings.ReplaceAll(m[1], "&#39;", "'")
	}
	return ""
}

// login submits the login form; it returns the response.
func (b *browser) login(code, user string) resp {
	b.t.Helper()
	p := b.do(http.MethodGet, "/web/", nil, nil)
	return b.do(http.MethodPost, "/web/login", url.Values{"csrf": {csrfOf(b.t, p.body)}, "code": {code}, "user": {user}, "password": {pw}}, nil)
}

// TestPagesAreLockedDown: every page has the strict policy and no inline script or style;
// the cookie is __Host-, Secure, HttpOnly, SameSite=Strict.
func TestPagesAreLockedDown(t *testing.T) {
	r := newRig(t)
	b := r.browser()
	p := b.do(http.MethodGet, "/web/", nil, nil)
	if p.code != http.StatusOK {
		t.Fatalf("GET /web/: %d", p.code)
	}
	if got := p.h.Get("Content-Security-Policy"); got != web.ContentSecurityPolicy || !strings.Contains(got, "script-src 'self'") ||
		strings.Contains(got, "unsafe-inline") {
		t.Errorf("CSP %q", got)
	}
	for k, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"} {
		if got := p.h.Get(k); got != want {
			t.Errorf("%s: %q", k, got)
		}
	}
	sc := p.h.Get("Set-Cookie")
	for _, want := range []string{web.CookieName + "=", "Path=/", "Secure", "HttpOnly", "SameSite=Strict"} {
		if !strings.Contains(sc, want) {
			t.Errorf("Set-Cookie %q lacks %s", sc, want)
		}
	}
	pages := []string{p.body}
	b2 := r.browser()
	lp := b2.login("SLiad+WEBA", "amy")
	pages = append(pages, lp.body)
	for _, pg := range pages {
		if m := inlineRe.FindString(pg); m != "" {
			t.Errorf("inline script or style %q in:\n%s", m, pg)
		}
	}
	for _, path := range []string{"/web/static/desktop.js", "/web/static/novnc/core/rfb.js"} {
		s := b.do(http.MethodGet, path, nil, nil)
		if s.code != http.StatusOK || !strings.HasPrefix(s.h.Get("Content-Type"), "text/javascript") {
			t.Errorf("%s: %d %s", path, s.code, s.h.Get("Content-Type"))
		}
	}
}

// TestWebLogin: the guide's refusals (web access DENY by default, an address outside the
// IP groups, an unknown registration code), then password + TOTP, the WorkSpace page, a
// connect tag, and the WebSocket's rules: another origin, a replayed tag.
func TestWebLogin(t *testing.T) {
	r := newRig(t)
	b := r.browser()
	if got := errorOf(b.login("SLiad+NOWB", "ned").body); got != broker.MsgNotAuthorized {
		t.Errorf("web access at the directory's default: %q", got)
	}
	if got := errorOf(b.login("SLiad+IPGR", "ivy").body); got != broker.MsgNotAuthorized {
		t.Errorf("an address outside the IP groups: %q", got)
	}
	if got := errorOf(b.login("NOSUCHCODE", "amy").body); got != broker.MsgRegistration {
		t.Errorf("an unknown registration code: %q", got)
	}
	audit, _ := os.ReadFile(filepath.Join(r.dir, "audit.jsonl"))
	for _, want := range []string{"device type web is not allowed", "client address not in the directory's IP access control groups", `"clientPlatform":"Web"`} {
		if !bytes.Contains(audit, []byte(want)) {
			t.Errorf("the audit trail lacks %s:\n%s", want, audit)
		}
	}

	// Password, then TOTP.
	mfa := b.login("SLiad+WEBA", "amy")
	if !strings.Contains(mfa.body, `id="passcode"`) || !strings.Contains(mfa.body, auth.TOTPPrompt) {
		t.Fatalf("no MFA step after the password:\n%s", mfa.body)
	}
	preLogin := cookieOf(b)
	code, _ := auth.TOTPCode(r.secret, time.Now())
	// The MFA form without its token, or from another origin: refused, nothing changes.
	if p := b.do(http.MethodPost, "/web/mfa", url.Values{"passcode": {code}}, nil); p.code != http.StatusForbidden {
		t.Errorf("MFA without the CSRF token: %d", p.code)
	}
	b.origin = "https://evil.example"
	if p := b.do(http.MethodPost, "/web/mfa", url.Values{"csrf": {csrfOf(t, mfa.body)}, "passcode": {code}}, nil); p.code != http.StatusForbidden {
		t.Errorf("MFA from another origin: %d", p.code)
	}
	b.origin = r.base
	b.origin = "null" // a sandboxed page's form
	if p := b.do(http.MethodPost, "/web/mfa", url.Values{"csrf": {csrfOf(t, mfa.body)}, "passcode": {code}}, nil); p.code != http.StatusForbidden {
		t.Errorf("MFA from Origin null: %d", p.code)
	}
	b.origin = r.base
	if p := b.do(http.MethodPost, "/web/mfa", url.Values{"csrf": {csrfOf(t, mfa.body)}, "passcode": {code}}, map[string]string{"Sec-Fetch-Site": "cross-site"}); p.code != http.StatusForbidden {
		t.Errorf("MFA with Sec-Fetch-Site cross-site: %d", p.code)
	}
	done := b.do(http.MethodPost, "/web/mfa", url.Values{"csrf": {csrfOf(t, mfa.body)}, "passcode": {code}}, nil)
	if done.code != http.StatusSeeOther || done.h.Get("Location") != "/web/workspace" {
		t.Fatalf("MFA: %d %s\n%s", done.code, done.h.Get("Location"), done.body)
	}
	if cookieOf(b) == preLogin {
		t.Error("the session id before login is the logged-in one")
	}
	wp := b.do(http.MethodGet, "/web/workspace", nil, nil)
	if !strings.Contains(wp.body, `id="ws-state" class="state state-AVAILABLE">AVAILABLE<`) || !strings.Contains(wp.body, `id="open"`) {
		t.Fatalf("WorkSpace page:\n%s", wp.body)
	}
	token := csrfOf(t, wp.body)
	desk := b.do(http.MethodGet, "/web/desktop", nil, nil)
	for _, pg := range []string{wp.body, desk.body} {
		if m := inlineRe.FindString(pg); m != "" {
			t.Errorf("inline script or style %q in:\n%s", m, pg)
		}
	}
	if !strings.Contains(desk.body, `<script type="module" src="/web/static/desktop.js"></script>`) {
		t.Errorf("the desktop page does not load desktop.js:\n%s", desk.body)
	}

	// A connect tag for the desktop's WebSocket.
	c := b.do(http.MethodPost, "/web/connect", nil, map[string]string{web.CSRFHeader: token})
	var alloc struct{ Path, WorkspaceID string }
	if err := json.Unmarshal([]byte(c.body), &alloc); c.code != http.StatusOK || err != nil || !strings.HasPrefix(alloc.Path, "/web/ws?tag=") {
		t.Fatalf("connect: %d %s", c.code, c.body)
	}
	events, _ := os.ReadFile(filepath.Join(r.dir, "access.jsonl"))
	if !bytes.Contains(events, []byte(`"clientPlatform":"Web"`)) || !bytes.Contains(events, []byte(`"workspacesClientProductName":"WorkSpaces Web client"`)) {
		t.Errorf("access event:\n%s", events)
	}
	ws := func(path, origin string) int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		u, _ := url.Parse(r.base)
		h := http.Header{"Origin": {origin}, "Cookie": {web.CookieName + "=" + cookieOf(b)}}
		conn, res, err := websocket.Dial(ctx, "wss://"+u.Host+path, &websocket.DialOptions{HTTPClient: b.hc, HTTPHeader: h})
		if err == nil {
			conn.CloseNow()
			return http.StatusSwitchingProtocols
		}
		if res == nil {
			t.Fatalf("WebSocket: %v", err)
		}
		return res.StatusCode
	}
	if code := ws(alloc.Path, "https://evil.example"); code != http.StatusForbidden {
		t.Errorf("WebSocket from another origin: %d", code)
	}
	if code := ws(alloc.Path, r.base); code != http.StatusSwitchingProtocols {
		t.Errorf("WebSocket with the tag: %d", code)
	}
	if code := ws(alloc.Path, r.base); code != http.StatusForbidden {
		t.Errorf("the same tag again: %d", code)
	}
	// A tag of amy's is no use in another web session (bob's browser, same address).
	c = b.do(http.MethodPost, "/web/connect", nil, map[string]string{web.CSRFHeader: token})
	json.Unmarshal([]byte(c.body), &alloc)
	other := r.browser()
	other.do(http.MethodGet, "/web/", nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u, _ := url.Parse(r.base)
	if _, res, err := websocket.Dial(ctx, "wss://"+u.Host+alloc.Path, &websocket.DialOptions{HTTPClient: other.hc,
		HTTPHeader: http.Header{"Origin": {r.base}, "Cookie": {web.CookieName + "=" + cookieOf(other)}}}); err == nil || res.StatusCode != http.StatusUnauthorized {
		t.Errorf("amy's tag from a session that is not logged in: %v", err)
	}

	// Log out: the cookie is no use after.
	lo := b.do(http.MethodPost, "/web/logout", url.Values{"csrf": {token}}, nil)
	if lo.code != http.StatusSeeOther {
		t.Errorf("logout: %d", lo.code)
	}
	if p := b.do(http.MethodGet, "/web/workspace", nil, nil); p.code != http.StatusSeeOther || p.h.Get("Location") != "/web/" {
		t.Errorf("the WorkSpace page after logout: %d %s", p.code, p.h.Get("Location"))
	}
}

// TestWSPRefused: a WSP WorkSpace is not for Web Access (the guide); the refusal says why.
func TestWSPRefused(t *testing.T) {
	r := newRig(t)
	b := r.browser()
	if p := b.login("SLiad+WSPW", "wes"); p.code != http.StatusSeeOther {
		t.Fatalf("login: %d %s", p.code, p.body)
	}
	wp := b.do(http.MethodGet, "/web/workspace", nil, nil)
	if errorOf(wp.body) != web.MsgWebNotWSP || strings.Contains(wp.body, `id="open"`) {
		t.Errorf("the WorkSpace page of a WSP WorkSpace:\n%s", wp.body)
	}
	c := b.do(http.MethodPost, "/web/connect", nil, map[string]string{web.CSRFHeader: csrfOf(t, wp.body)})
	var res struct{ Message, Path string }
	json.Unmarshal([]byte(c.body), &res)
	if c.code != http.StatusConflict || res.Message != web.MsgWebNotWSP || res.Path != "" {
		t.Errorf("connect to a WSP WorkSpace: %d %s", c.code, c.body)
	}
}

func cookieOf(b *browser) string {
	u, _ := url.Parse(b.base)
	for _, c := range b.hc.Jar.Cookies(u) {
		if c.Name == web.CookieName {
			return c.Value
		}
	}
	return ""
}

// Self-service for the test directories: restart only (a registration without
// self-service); hostd's side is the broker's TestSelfServiceAgainstHostd.
func (s staticWorkspaces) Permissions(context.Context, string) (catalog.SelfServicePermissions, error) {
	return catalog.DefaultSelfService(false), nil
}
func (s staticWorkspaces) Reboot(context.Context, string) error                    { return nil }
func (s staticWorkspaces) Modify(context.Context, string, workspaces.Change) error { return nil }
func (s staticWorkspaces) Rebuild(context.Context, string) error                   { return nil }
func (s staticWorkspaces) LatestBackup(context.Context, string) (time.Time, bool, error) {
	return time.Now().Add(-time.Hour), true, nil
}

// TestSelfServicePage (wes: a user without MFA): the WorkSpace page's self-service forms go through the broker's
// rules: restart is accepted and said so; a running-mode switch the directory does not
// allow is refused with the message naming the permission; without the CSRF token,
// nothing happens.
func TestSelfServicePage(t *testing.T) {
	r := newRig(t)
	b := r.browser()
	if p := b.login("SLiad+WSPW", "wes"); p.code != http.StatusSeeOther {
		t.Fatalf("login: %d %s", p.code, p.body)
	}
	wp := b.do(http.MethodGet, "/web/workspace", nil, nil)
	if !strings.Contains(wp.body, `id="self-service"`) || !strings.Contains(wp.body, `id="ss-restart"`) {
		t.Fatalf("no self-service forms on the WorkSpace page:\n%s", wp.body)
	}
	csrf := csrfOf(t, wp.body)
	p := b.do(http.MethodPost, "/web/self-service", url.Values{"csrf": {csrf}, "action": {"restart"}}, nil)
	if p.code != http.StatusOK || !strings.Contains(p.body, broker.MsgRestarted) {
		t.Errorf("restart: %d\n%s", p.code, p.body)
	}
	p = b.do(http.MethodPost, "/web/self-service", url.Values{"csrf": {csrf}, "action": {"switch-running-mode"}, "runningMode": {"ALWAYS_ON"}}, nil)
	if got := html.UnescapeString(errorOf(p.body)); p.code != http.StatusForbidden || got != broker.MsgSelfServiceOff("Switch running mode") {
		t.Errorf("switch running mode: %d %q", p.code, got)
	}
	if !strings.Contains(wp.body, `id="ss-rebuild"`) {
		t.Error("no rebuild form on the WorkSpace page")
	}
	p = b.do(http.MethodPost, "/web/self-service", url.Values{"csrf": {csrf}, "action": {"rebuild"}}, nil)
	if got := html.UnescapeString(errorOf(p.body)); p.code != http.StatusBadRequest || got != broker.MsgRebuildConfirm {
		t.Errorf("rebuild unconfirmed: %d %q", p.code, got)
	}
	p = b.do(http.MethodPost, "/web/self-service", url.Values{"csrf": {csrf}, "action": {"rebuild"}, "confirm": {"yes"}}, nil)
	if got := html.UnescapeString(errorOf(p.body)); p.code != http.StatusForbidden || got != broker.MsgSelfServiceOff("Rebuild WorkSpace from client") {
		t.Errorf("rebuild: %d %q", p.code, got)
	}
	p = b.do(http.MethodPost, "/web/self-service", url.Values{"action": {"restart"}}, nil)
	if p.code != http.StatusForbidden {
		t.Errorf("without the CSRF token: %d", p.code)
	}
}
