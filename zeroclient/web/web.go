// Package web is Web Access: the browser client zeroclient serves on its HTTPS listener
// under /web/. A user logs in (registration code or directory, user name, password, and
// the MFA step when the directory has MFA), sees their WorkSpace (its state, and "start"
// when it is STOPPED), and gets its desktop in the page with noVNC (vendored under
// static/novnc, embedded). The desktop's WebSocket is opened with a fresh one-time connect
// tag (package tags) bound to the user and the client's address, and is relayed by the
// gateway exactly as a zero client's session is (gateway.ServeWeb).
//
// The rules are the broker's: the directory's IP access control groups against the TCP
// peer address, the directory's `web` device access (default DENY), MFA readiness, the
// lockout, then the credentials (package auth); the same messages (the guide's); login
// events with the Web platform. Pages carry a strict Content-Security-Policy (scripts and
// styles only from /web/static, nothing inline); the session cookie is __Host-, Secure,
// HttpOnly and SameSite=Strict; every POST needs the session's CSRF token and a
// same-origin Origin (when the browser sends one); the WebSocket needs a same-origin
// Origin.
package web

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/events"
	"deskhost/zeroclient/gateway"
	"deskhost/zeroclient/metrics"
	"deskhost/zeroclient/policy"
	"deskhost/zeroclient/session"
	"deskhost/zeroclient/tags"
	"deskhost/zeroclient/workspaces"
)

//go:embed static templates
var files embed.FS

// Names the client sees and the events carry.
const (
	// CookieName is the web session's cookie. The __Host- prefix makes browsers insist on
	// Secure, Path=/ and no Domain.
	CookieName = "__Host-deskhost-web"
	// ProductName is what a web session says it is (policy.ClassifyDevice: DeviceWeb).
	ProductName = "WorkSpaces Web client"
	// Prefix is where Web Access is served.
	Prefix = "/web/"
	// CSRFHeader carries the CSRF token of fetch requests (forms send the csrf field).
	CSRFHeader = "X-CSRF-Token"
)

// ContentSecurityPolicy is every page's policy: nothing inline, nothing from elsewhere.
// connect-src 'self' covers the page's own wss:// origin; img-src data: is noVNC's cursor
// and tight-PNG rectangles.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// Messages of Web Access's own that the broker has no counterpart for.
const (
	MsgSessionExpired = "Your session has expired. Log in again."
	MsgCrossSite      = "The request did not come from this site's own pages, so it was refused. Reload the page and try again."
	MsgStartRequested = "Your WorkSpace is starting. This page refreshes until it is available."
	MsgMissingFields  = "Enter your user name and password."
	// MsgWebNotWSP: the guide's Web Access is "not supported for the WSP beta".
	MsgWebNotWSP = "Web Access cannot open this WorkSpace: it uses the WSP protocol, which Web Access does not support. Use a WorkSpaces client application."
)

// Config is what Web Access needs; all but Log and Now are required.
type Config struct {
	Auth       *auth.Service
	Sessions   *session.Store
	Tags       *tags.Store
	Workspaces workspaces.Backend
	Gateway    *gateway.Gateway
	Events     *events.Emitter
	Metrics    *metrics.Metrics
	Log        *slog.Logger
	Now        func() time.Time
}

// Web serves Web Access.
type Web struct {
	c       Config
	csrfKey [32]byte
	pages   *template.Template
	static  http.Handler
}

// New makes Web Access.
func New(c Config) (*Web, error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	w := &Web{c: c}
	if _, err := rand.Read(w.csrfKey[:]); err != nil {
		return nil, err
	}
	var err error
	if w.pages, err = template.ParseFS(files, "templates/*.html"); err != nil {
		return nil, err
	}
	st, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	w.static = http.StripPrefix(Prefix+"static/", http.FileServerFS(st))
	return w, nil
}

// Handler serves everything under Prefix.
func (w *Web) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /web/{$}", w.serveLogin)
	mux.HandleFunc("POST /web/login", w.post(w.handleLogin))
	mux.HandleFunc("POST /web/mfa", w.post(w.handleMFA))
	mux.HandleFunc("GET /web/workspace", w.serveWorkspace)
	mux.HandleFunc("POST /web/start", w.post(w.handleStart))
	mux.HandleFunc("POST /web/self-service", w.post(w.handleSelfService))
	mux.HandleFunc("GET /web/desktop", w.serveDesktop)
	mux.HandleFunc("POST /web/connect", w.post(w.handleConnect))
	mux.HandleFunc("GET /web/ws", w.serveWebSocket)
	mux.HandleFunc("POST /web/logout", w.post(w.handleLogout))
	mux.HandleFunc("GET /web/static/", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Cache-Control", "public, max-age=3600")
		w.static.ServeHTTP(rw, r)
	})
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := rw.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// same-origin, not no-referrer: with no-referrer, browsers send "Origin: null" on
		// form posts, and the Origin check could not tell our own forms from a sandboxed page.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Strict-Transport-Security", "max-age=31536000")
		if r.URL.Path == "/web" {
			http.Redirect(rw, r, Prefix, http.StatusSeeOther)
			return
		}
		mux.ServeHTTP(rw, r)
	})
}

// clientAddr is the TCP peer (never a forwarded header), as the broker's.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// sessionOf is the request's web session (nil if none: no cookie, expired, or another
// address's).
func (w *Web) sessionOf(r *http.Request) *session.Session {
	c, err := r.Cookie(CookieName)
	if err != nil {
		return nil
	}
	s, _ := w.c.Sessions.Get(c.Value, clientAddr(r))
	if s == nil || s.Device != catalog.DeviceWeb {
		return nil // a broker session's cookie value is not a web session
	}
	return s
}

// newSession starts a web session (before login, or in place of the pre-login one at
// login, so an id seen before the password is never the logged-in one).
func (w *Web) newSession(rw http.ResponseWriter, r *http.Request) (*session.Session, error) {
	s, err := w.c.Sessions.New(clientAddr(r), "")
	if err != nil {
		return nil, err
	}
	s.ProductName, s.Platform, s.Device = ProductName, "Web", catalog.DeviceWeb
	setCookie(rw, s.ID, 0)
	return s, nil
}

func setCookie(rw http.ResponseWriter, value string, maxAge int) {
	rw.Header().Del("Set-Cookie")
	http.SetCookie(rw, &http.Cookie{Name: CookieName, Value: value, Path: "/", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

// csrfToken is the session's CSRF token: an HMAC of its id under a key of this process.
func (w *Web) csrfToken(s *session.Session) string {
	m := hmac.New(sha256.New, w.csrfKey[:])
	m.Write([]byte("csrf\x00" + s.ID))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// sameOrigin reports whether the browser says the request comes from this site's own
// pages: Origin, when sent, is this host over https, and Sec-Fetch-Site, when sent, is
// same-origin (or none: typed in the address bar).
func sameOrigin(r *http.Request) bool {
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
			return false
		}
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
		return true
	}
	return false
}

// post wraps a state-changing handler: same origin, a live web session, and its CSRF token
// (form field csrf or the X-CSRF-Token header). Anything else is 403 and changes nothing.
func (w *Web) post(h func(http.ResponseWriter, *http.Request, *session.Session)) http.HandlerFunc {
	return func(rw http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(rw, r.Body, 64<<10)
		if !sameOrigin(r) {
			w.c.Log.Info("web: cross-site request refused", "client", clientAddr(r).String(), "path", r.URL.Path,
				"origin", r.Header.Get("Origin"), "sec_fetch_site", r.Header.Get("Sec-Fetch-Site"))
			w.refuse(rw, r, http.StatusForbidden, MsgCrossSite)
			return
		}
		s := w.sessionOf(r)
		if s == nil {
			if r.URL.Path == Prefix+"login" {
				// The login page's session ran out while the user typed: a fresh page.
				w.renderLogin(rw, r, nil, MsgSessionExpired, http.StatusForbidden)
				return
			}
			w.refuse(rw, r, http.StatusUnauthorized, MsgSessionExpired)
			return
		}
		tok := r.Header.Get(CSRFHeader)
		if tok == "" {
			tok = r.PostFormValue("csrf")
		}
		if !hmac.Equal([]byte(tok), []byte(w.csrfToken(s))) {
			w.c.Log.Info("web: request without its CSRF token refused", "client", clientAddr(r).String(), "path", r.URL.Path)
			w.refuse(rw, r, http.StatusForbidden, MsgCrossSite)
			return
		}
		s.Mu.Lock()
		defer s.Mu.Unlock()
		w.c.Sessions.Touch(s)
		h(rw, r, s)
	}
}

// refuse answers a refused request: JSON for fetch (/web/connect), else the error page.
func (w *Web) refuse(rw http.ResponseWriter, r *http.Request, code int, msg string) {
	if r.URL.Path == Prefix+"connect" {
		writeJSON(rw, code, map[string]any{"message": msg, "login": code == http.StatusUnauthorized})
		return
	}
	w.render(rw, code, "error.html", page{Title: "Web Access", Error: msg})
}

func writeJSON(rw http.ResponseWriter, code int, v any) {
	rw.Header().Set("Content-Type", "application/json")
	rw.Header().Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	json.NewEncoder(rw).Encode(v)
}

// page is what the templates get.
type page struct {
	Title     string
	CSRF      string
	Error     string
	Notice    string
	Prompt    string
	User      string
	Code      string
	Directory string
	Workspace *workspaces.Workspace
	CanStart  bool
	CanOpen   bool
	Refresh   bool
}

func (w *Web) render(rw http.ResponseWriter, code int, name string, p page) {
	h := rw.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	rw.WriteHeader(code)
	if err := w.pages.ExecuteTemplate(rw, name, p); err != nil {
		w.c.Log.Error("web: render", "page", name, "err", err)
	}
}

// authenticated is the logged-in web session of a GET, or nil after sending the user to
// the login page.
func (w *Web) authenticated(rw http.ResponseWriter, r *http.Request) *session.Session {
	s := w.sessionOf(r)
	if s == nil || s.Stage() != session.Authenticated {
		http.Redirect(rw, r, Prefix, http.StatusSeeOther)
		return nil
	}
	w.c.Sessions.Touch(s)
	return s
}

func (w *Web) serveLogin(rw http.ResponseWriter, r *http.Request) {
	if s := w.sessionOf(r); s != nil && s.Stage() == session.Authenticated {
		http.Redirect(rw, r, Prefix+"workspace", http.StatusSeeOther)
		return
	}
	q := r.URL.Query()
	w.renderLogin(rw, r, nil, "", http.StatusOK, q.Get("code"), q.Get("user"))
}

// renderLogin shows the login form in s (a new pre-login session when s is nil).
func (w *Web) renderLogin(rw http.ResponseWriter, r *http.Request, s *session.Session, msg string, code int, prefill ...string) {
	if s == nil {
		var err error
		if s, err = w.newSession(rw, r); err != nil {
			w.c.Log.Warn("web: no session", "err", err)
			w.render(rw, http.StatusServiceUnavailable, "error.html", page{Title: "Web Access", Error: broker.MsgBusy})
			return
		}
	}
	p := page{Title: "Log in", CSRF: w.csrfToken(s), Error: msg}
	if len(prefill) == 2 {
		p.Code, p.User = prefill[0], prefill[1]
	}
	w.render(rw, code, "login.html", p)
}

// audit records a refused web login as the broker does, with the Web platform.
func (w *Web) audit(action, id, reason string, s *session.Session, dirID, user string, from netip.Addr) {
	attrs := map[string]string{"clientIpAddress": from.String(), "directoryId": dirID,
		"clientPlatform": policy.EventPlatform(catalog.DeviceWeb), "productName": ProductName}
	if user != "" {
		attrs["userName"] = user
	}
	w.c.Metrics.Logins.WithLabelValues(dirID, id).Inc()
	w.c.Events.Audit(action, id, reason, attrs)
}

func (w *Web) handleLogin(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	from := clientAddr(r)
	code, domain := strings.TrimSpace(r.PostFormValue("code")), strings.TrimSpace(r.PostFormValue("directory"))
	typed, password := strings.TrimSpace(r.PostFormValue("user")), r.PostFormValue("password")
	s.SetStage(session.Greeted)
	s.Lookup, s.RADIUSState, s.Rounds = nil, nil, 0
	again := func(msg string) {
		p := page{Title: "Log in", CSRF: w.csrfToken(s), Error: msg, Code: code, User: typed, Directory: domain}
		w.render(rw, http.StatusOK, "login.html", p)
	}
	if typed == "" || password == "" {
		again(MsgMissingFields)
		return
	}
	if code != "" {
		d := w.c.Auth.ByRegistrationCode(code)
		if d == nil {
			w.audit("authenticate", brokerxml.AuthFailed, "unknown or deregistered registration code", s, "", "", from)
			again(broker.MsgRegistration)
			return
		}
		domain = d.ID
	}
	dir, user := w.c.Auth.Resolve(typed, domain)
	dirID := ""
	known := false
	if dir != nil {
		dirID = dir.ID
		if dir.Login.Kind() == catalog.TypeLocal {
			_, known = dir.FindUser(user)
		}
	}
	refuse := func(id, msg, reason string) {
		logUser, auditUser := "(not a known user)", ""
		if known {
			logUser, auditUser = typed, typed
		}
		w.audit("authenticate", id, reason, s, dirID, auditUser, from)
		w.c.Log.Info("web: login refused", "client", from.String(), "directory", dirID, "typed_user", logUser, "result", id, "reason", reason)
		again(msg)
	}
	if dir != nil {
		// What depends on the directory but not on the user comes first (as the broker).
		if !dir.Login.IPAllowed(from) {
			refuse(brokerxml.AuthFailedDenied, broker.MsgNotAuthorized, "client address not in the directory's IP access control groups")
			return
		}
		if !dir.Login.DeviceAccess.Allowed(catalog.DeviceWeb) {
			refuse(brokerxml.AuthFailedDenied, broker.MsgNotAuthorized, "device type web is not allowed")
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	res := w.c.Auth.Password(ctx, dir, user, password, from)
	known = res.KnownUser
	switch res.Outcome {
	case auth.OK, auth.NeedPasscode:
		s.DirectoryID, s.UserName = dir.ID, res.UserName
		if res.Outcome == auth.NeedPasscode {
			s.SetStage(session.NeedPasscode)
			w.c.Metrics.Logins.WithLabelValues(dir.ID, brokerxml.AuthIncomplete).Inc()
			w.c.Log.Info("web: password accepted; MFA next", "client", from.String(), "directory", dir.ID, "user", s.UserName)
			w.render(rw, http.StatusOK, "mfa.html", page{Title: "Verify", CSRF: w.csrfToken(s), Prompt: res.Prompt, User: s.UserName})
			return
		}
		w.loggedIn(rw, r, s)
	case auth.Busy:
		refuse(brokerxml.AuthFailedBusy, broker.MsgBusy, res.Reason)
	case auth.Locked:
		refuse(brokerxml.AuthFailedLocked, broker.MsgLocked, res.Reason)
	case auth.MFANotReady:
		refuse(brokerxml.AuthFailedMFASetup, broker.MsgMFASetup, res.Reason)
	case auth.Unavailable:
		refuse(brokerxml.AuthFailedUnavail, broker.MsgUnavailable, res.Reason)
	default:
		refuse(brokerxml.AuthFailed, broker.MsgBadLogin, res.Reason)
	}
}

// maxChallengeRounds bounds RADIUS challenge rounds in one login (as the broker's).
const maxChallengeRounds = 3

func (w *Web) handleMFA(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	from := clientAddr(r)
	if s.Stage() != session.NeedPasscode {
		w.renderLogin(rw, r, s, broker.MsgNotAuthed, http.StatusOK)
		return
	}
	dir := w.c.Auth.ByID(s.DirectoryID)
	if dir == nil {
		s.SetStage(session.Greeted)
		w.renderLogin(rw, r, s, broker.MsgUnavailable, http.StatusOK)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 60*time.Second)
	defer cancel()
	res := w.c.Auth.Passcode(ctx, dir, s.UserName, r.PostFormValue("passcode"), s.RADIUSState, from)
	refuse := func(id, msg string) {
		w.audit("authenticate", id, res.Reason, s, dir.ID, s.UserName, from)
		w.c.Log.Info("web: passcode refused", "client", from.String(), "directory", dir.ID, "user", s.UserName, "result", id, "reason", res.Reason)
		s.SetStage(session.Greeted) // start again from the password
		s.RADIUSState, s.Rounds = nil, 0
		w.renderLogin(rw, r, s, msg, http.StatusOK)
	}
	switch res.Outcome {
	case auth.OK:
		w.loggedIn(rw, r, s)
	case auth.NeedPasscode:
		s.Rounds++
		if s.Rounds > maxChallengeRounds {
			res.Reason = "too many RADIUS challenges"
			refuse(brokerxml.AuthFailedPasscode, broker.MsgBadPasscode)
			return
		}
		s.RADIUSState = res.State
		w.render(rw, http.StatusOK, "mfa.html", page{Title: "Verify", CSRF: w.csrfToken(s), Prompt: res.Prompt, User: s.UserName})
	case auth.Busy:
		refuse(brokerxml.AuthFailedBusy, broker.MsgBusy)
	case auth.Locked:
		refuse(brokerxml.AuthFailedLocked, broker.MsgLocked)
	case auth.MFANotReady:
		refuse(brokerxml.AuthFailedMFASetup, broker.MsgMFASetup)
	case auth.Unavailable:
		refuse(brokerxml.AuthFailedUnavail, broker.MsgUnavailable)
	default:
		refuse(brokerxml.AuthFailedPasscode, broker.MsgBadPasscode)
	}
}

// loggedIn ends a login: the pre-login session is replaced by a new one (new id, new CSRF
// token) that is Authenticated, and the user goes to their WorkSpace.
func (w *Web) loggedIn(rw http.ResponseWriter, r *http.Request, old *session.Session) {
	s, err := w.newSession(rw, r)
	if err != nil {
		w.c.Log.Warn("web: no session", "err", err)
		w.render(rw, http.StatusServiceUnavailable, "error.html", page{Title: "Web Access", Error: broker.MsgBusy})
		return
	}
	s.DirectoryID, s.UserName, s.LoginTime = old.DirectoryID, old.UserName, w.c.Now()
	var resume time.Duration
	if d := w.c.Auth.ByID(s.DirectoryID); d != nil {
		resume = d.Login.Session.ResumeTimeout()
	}
	w.c.Sessions.LoggedIn(s, resume)
	w.c.Sessions.Delete(old.ID)
	w.c.Metrics.Logins.WithLabelValues(s.DirectoryID, brokerxml.AuthComplete).Inc()
	w.c.Log.Info("web: logged in", "client", clientAddr(r).String(), "directory", s.DirectoryID, "user", s.UserName)
	http.Redirect(rw, r, Prefix+"workspace", http.StatusSeeOther)
}

// workspaceOf is the session user's WorkSpace as hostd says now.
func (w *Web) workspaceOf(ctx context.Context, s *session.Session) (workspaces.Workspace, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return w.c.Workspaces.ForUser(ctx, s.DirectoryID, s.UserName)
}

// startable: the guide's "start" applies to a STOPPED (or hibernated) WorkSpace.
func startable(state string) bool { return state == "STOPPED" || state == "HIBERNATED" }

func transitional(state string) bool {
	switch state {
	case "PENDING", "STARTING", "REBOOTING", "REBUILDING", "RESTORING", "UPDATING", "STOPPING":
		return true
	}
	return false
}

func (w *Web) serveWorkspace(rw http.ResponseWriter, r *http.Request) {
	s := w.authenticated(rw, r)
	if s == nil {
		return
	}
	s.Mu.Lock()
	defer s.Mu.Unlock()
	p := w.workspacePage(r, s)
	if r.URL.Query().Get("started") != "" && p.Refresh {
		p.Notice = MsgStartRequested
	}
	w.render(rw, http.StatusOK, "workspace.html", p)
}

// handleSelfService is the WorkSpace page's self-service form: the broker's rules
// (broker.SelfService), then the page with the answer. post holds s.Mu.
func (w *Web) handleSelfService(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	if s.Stage() != session.Authenticated {
		w.refuse(rw, r, http.StatusUnauthorized, broker.MsgNotAuthed)
		return
	}
	num := func(k string) int {
		n, _ := strconv.Atoi(r.PostFormValue(k))
		return n
	}
	q := broker.SelfServiceRequest{Action: r.PostFormValue("action"), ComputeType: r.PostFormValue("computeType"),
		RootVolumeSizeGib: num("rootVolumeSizeGib"), UserVolumeSizeGib: num("userVolumeSizeGib"), RunningMode: r.PostFormValue("runningMode"),
		Confirm: r.PostFormValue("confirm") == "yes"}
	code, res, reason := broker.SelfService(r.Context(), w.c.Workspaces, s, q)
	from := clientAddr(r).String()
	w.c.Events.Audit("self-service", res.Result, reason, map[string]string{"clientIpAddress": from, "directoryId": s.DirectoryID,
		"userName": s.UserName, "workspaceId": res.WorkspaceID, "action": q.Action, "clientPlatform": "Web"})
	w.c.Log.Info("web: self-service", "client", from, "user", s.UserName, "action", q.Action, "result", res.Result, "reason", reason)
	p := w.workspacePage(r, s)
	if res.Result == broker.ResultAccepted {
		p.Notice = res.Message
	} else {
		p.Error = res.Message
	}
	w.render(rw, code, "workspace.html", p)
}

// workspacePage is the WorkSpace page for s as hostd says now (the caller holds s.Mu).
func (w *Web) workspacePage(r *http.Request, s *session.Session) page {
	p := page{Title: "Your WorkSpace", CSRF: w.csrfToken(s), User: s.UserName}
	ws, ok, err := w.workspaceOf(r.Context(), s)
	switch {
	case err != nil:
		w.c.Log.Error("web: find WorkSpace", "user", s.UserName, "err", err)
		p.Error = broker.MsgLaunchError
	case !ok:
		p.Error = broker.MsgNoWorkspace
	default:
		p.Workspace = &ws
		p.CanStart = startable(ws.State)
		p.CanOpen = ws.State == "AVAILABLE"
		p.Refresh = transitional(ws.State)
		if _, id, msg := broker.Decide(ws, catalog.DeviceWeb); id != "" && !p.CanStart {
			p.Error = msg
		}
		if ws.Protocol == "WSP" {
			p.Error, p.CanOpen = MsgWebNotWSP, false
		}
	}
	return p
}

func (w *Web) handleStart(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	if s.Stage() != session.Authenticated {
		w.refuse(rw, r, http.StatusUnauthorized, broker.MsgNotAuthed)
		return
	}
	ws, ok, err := w.workspaceOf(r.Context(), s)
	if err == nil && ok && startable(ws.State) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		err = w.c.Workspaces.Start(ctx, ws.ID)
		cancel()
		if err == nil {
			w.c.Log.Info("web: start requested", "client", clientAddr(r).String(), "user", s.UserName, "workspace", ws.ID)
		}
	}
	if err != nil {
		w.c.Log.Error("web: start WorkSpace", "user", s.UserName, "err", err)
		w.refuse(rw, r, http.StatusBadGateway, broker.MsgLaunchError)
		return
	}
	http.Redirect(rw, r, Prefix+"workspace?started=1", http.StatusSeeOther)
}

func (w *Web) serveDesktop(rw http.ResponseWriter, r *http.Request) {
	s := w.authenticated(rw, r)
	if s == nil {
		return
	}
	w.render(rw, http.StatusOK, "desktop.html", page{Title: "Desktop", CSRF: w.csrfToken(s), User: s.UserName})
}

// handleConnect is the web client's allocate-resource: the rules as they are now, the
// WorkSpace's state (broker.Decide for device type web), then a fresh connect tag bound
// to the user, the WorkSpace and this address, and the WebSocket path that redeems it.
func (w *Web) handleConnect(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	from := clientAddr(r)
	if s.Stage() != session.Authenticated {
		w.refuse(rw, r, http.StatusUnauthorized, broker.MsgNotAuthed)
		return
	}
	ws, ok, err := w.workspaceOf(r.Context(), s)
	if err != nil || !ok {
		msg := broker.MsgNoWorkspace
		if err != nil {
			w.c.Log.Error("web: find WorkSpace", "user", s.UserName, "err", err)
			msg = broker.MsgLaunchError
		}
		writeJSON(rw, http.StatusNotFound, map[string]any{"message": msg})
		return
	}
	labels := []string{s.DirectoryID, ws.ID}
	w.c.Metrics.ConnectionAttempt.WithLabelValues(labels...).Inc()
	fail := func(code int, id, msg, reason string, retry bool) {
		w.c.Metrics.ConnectionFailure.WithLabelValues(labels...).Inc()
		w.c.Events.Audit("allocate-resource", id, reason, map[string]string{"clientIpAddress": from.String(), "directoryId": s.DirectoryID,
			"userName": s.UserName, "workspaceId": ws.ID, "state": ws.State, "clientPlatform": policy.EventPlatform(catalog.DeviceWeb)})
		w.c.Log.Info("web: connection refused", "client", from.String(), "workspace", ws.ID, "state", ws.State, "result", id, "reason", reason)
		writeJSON(rw, code, map[string]any{"message": msg, "retry": retry})
	}
	// The rules may have changed since the login.
	dir := w.c.Auth.ByID(s.DirectoryID)
	if dir == nil || !dir.Login.IPAllowed(from) {
		fail(http.StatusForbidden, brokerxml.AllocDenied, broker.MsgNotAuthorized, "client address not in the directory's IP access control groups", false)
		return
	}
	if !dir.Login.DeviceAccess.Allowed(catalog.DeviceWeb) {
		fail(http.StatusForbidden, brokerxml.AllocDenied, broker.MsgNotAuthorized, "device type web is not allowed", false)
		return
	}
	if ws.Protocol == "WSP" {
		fail(http.StatusConflict, brokerxml.AllocNotOnDevice, MsgWebNotWSP, "Web Access does not serve WSP WorkSpaces", false)
		return
	}
	switch act, id, msg := broker.Decide(ws, catalog.DeviceWeb); act {
	case broker.Refuse:
		fail(http.StatusConflict, id, msg, "WorkSpace is "+ws.State, false)
		return
	case broker.Start, broker.Wait:
		fail(http.StatusConflict, brokerxml.AllocStarting, broker.MsgStarting, "WorkSpace is "+ws.State, true)
		return
	}
	t, err := w.c.Tags.Issue(tags.Tag{SessionID: newSessionID(), DirectoryID: s.DirectoryID, UserName: s.UserName, WorkspaceID: ws.ID, Client: from})
	if err != nil {
		msg := broker.MsgLaunchError
		if errors.Is(err, tags.ErrTooMany) {
			msg = broker.MsgTagsBusy
		}
		fail(http.StatusServiceUnavailable, brokerxml.AllocFailed, msg, err.Error(), false)
		return
	}
	w.c.Sessions.Allocated(s, ws.ID)
	if !s.AccessEmitted {
		// One "WorkSpaces Access" event per login, with the Web platform.
		if err := w.c.Events.Access(events.Access{ClientIP: from.String(), ProductName: policy.EventProduct(catalog.DeviceWeb, ProductName),
			Platform: policy.EventPlatform(catalog.DeviceWeb), DirectoryID: s.DirectoryID, WorkspaceID: ws.ID, LoginTime: s.LoginTime}); err != nil {
			w.c.Log.Error("web: access event", "err", err)
		}
		s.AccessEmitted = true
	}
	w.c.Log.Info("web: allocated", "client", from.String(), "user", s.UserName, "workspace", ws.ID, "session_id", t.SessionID)
	writeJSON(rw, http.StatusOK, map[string]any{"path": Prefix + "ws?tag=" + url.QueryEscape(t.Value), "workspaceId": ws.ID,
		"expires": t.Expires.UTC().Format(time.RFC3339)})
}

// newSessionID is a gateway session id, decimal as PCoIP's are.
func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	var n uint64
	for _, x := range b {
		n = n<<8 | uint64(x)
	}
	return strconv.FormatUint(n>>1, 10)
}

// serveWebSocket is the desktop's WebSocket: same-origin, the logged-in session of this
// address, and a connect tag issued to that session's user for this address, redeemed
// here once (a replay finds nothing). Then the gateway relays it to the display.
func (w *Web) serveWebSocket(rw http.ResponseWriter, r *http.Request) {
	from := clientAddr(r)
	origin := r.Header.Get("Origin")
	if u, err := url.Parse(origin); origin == "" || err != nil || u.Scheme != "https" || !strings.EqualFold(u.Host, r.Host) {
		w.c.Log.Info("web: WebSocket from another origin refused", "client", from.String(), "origin", origin)
		http.Error(rw, MsgCrossSite, http.StatusForbidden)
		return
	}
	s := w.sessionOf(r)
	if s == nil || s.Stage() != session.Authenticated {
		http.Error(rw, MsgSessionExpired, http.StatusUnauthorized)
		return
	}
	tag, err := w.c.Tags.RedeemPlain(r.URL.Query().Get("tag"), from)
	if err == nil && (tag.UserName != s.UserName || tag.DirectoryID != s.DirectoryID) {
		err = errors.New("the tag is another user's")
	}
	if err == nil {
		// Web access may have been turned off since the tag was issued.
		if d := w.c.Auth.ByID(tag.DirectoryID); d == nil || !d.Login.DeviceAccess.Allowed(catalog.DeviceWeb) {
			err = errors.New("web access is no longer allowed for the directory")
		}
	}
	if err != nil {
		w.c.Log.Info("web: WebSocket refused", "client", from.String(), "user", s.UserName, "err", err)
		http.Error(rw, gateway.ReasonBadTag, http.StatusForbidden)
		return
	}
	// The broker's server bounds how long a request may take to read and write; a
	// WebSocket lives as long as its session.
	rc := http.NewResponseController(rw)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	c, err := websocket.Accept(rw, r, &websocket.AcceptOptions{Subprotocols: []string{"binary"}})
	if err != nil {
		w.c.Log.Info("web: WebSocket handshake", "client", from.String(), "err", err)
		return
	}
	// The largest message a browser sends is a clipboard paste.
	c.SetReadLimit(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nc := websocket.NetConn(ctx, c, websocket.MessageBinary)
	// A session the service ends (taken over by another connection, cut by the IP groups,
	// shutdown) gets a close frame with CloseEnded, sent without waiting for the browser's
	// answer: the page then knows not to reconnect, as it does after a network drop (which
	// leaves it no close frame, 1006).
	end := func() { go c.Close(CloseEnded, "Session ended by the service: opened elsewhere, or access changed.") }
	w.c.Gateway.ServeWeb(nc, gateway.Transport(r.Context()), end, tag, from)
}

// CloseEnded is the WebSocket close code of a session the service ended; desktop.js does
// not reconnect after it.
const CloseEnded websocket.StatusCode = 4000

// Logout ends the web session.
func (w *Web) handleLogout(rw http.ResponseWriter, r *http.Request, s *session.Session) {
	w.c.Sessions.Delete(s.ID)
	setCookie(rw, "", -1)
	w.c.Log.Info("web: logged out", "client", clientAddr(r).String(), "user", s.UserName)
	http.Redirect(rw, r, Prefix, http.StatusSeeOther)
}
