// Package broker is the PCoIP-style connection broker zero clients talk to over HTTPS:
// POST /pcoip-broker/xml carrying hello, authenticate, get-resource-list, allocate-resource
// and bye, with the session in a JSESSIONID cookie. It also serves the registration lookup
// (POST /registration) and the activation page of local directories (/activate).
//
// Who may log in is decided here in this order: the directory (from the user name or
// domain), the directory's IP access control groups against the client's own address
// (never a forwarded header), the client's device type and firmware, MFA readiness, the
// lockout, then the credentials (package auth). allocate-resource checks the address
// again, finds the user's one WorkSpace through hostd, starts it if it is a stopped
// AutoStop one, and hands out a connect tag for the gateway.
package broker

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/events"
	"deskhost/zeroclient/metrics"
	"deskhost/zeroclient/policy"
	"deskhost/zeroclient/session"
	"deskhost/zeroclient/tags"
	"deskhost/zeroclient/workspaces"
)

// The guide's messages (catalog §14, §19, §28).
const (
	MsgNotAuthorized = "This device is not authorized to access the WorkSpace. Please contact your administrator for assistance."
	MsgUnhealthy     = "WorkSpace Status: Unhealthy. We were unable to connect you to your WorkSpace. Please try again in a few minutes."
	MsgLaunchError   = "An error occurred while launching your WorkSpace. Please try again."
	MsgRegistration  = "Device can't connect to the registration service. Check your network settings."
	// MsgMaintenance: the guide says only "Users cannot log in to the WorkSpace" while it is
	// in ADMIN_MAINTENANCE; this is how the broker says it.
	MsgMaintenance = "Your WorkSpace is under maintenance by your administrator (ADMIN_MAINTENANCE) and you cannot log in to it now. Please try again later or contact your administrator."
	MsgBadLogin    = "Unknown user name or incorrect password."
	MsgBadPasscode = "The MFA code is incorrect. Log in again."
	MsgLocked      = "Too many failed login attempts. Try again later."
	MsgMFASetup    = "Multi-factor authentication is being set up for your directory; you cannot log in until it is enabled. Please contact your administrator."
	MsgUnavailable = "Your directory cannot be reached right now. Please try again in a few minutes."
	MsgNotOnDevice = "Your WorkSpace uses a protocol this device does not support (zero clients support PCoIP WorkSpaces only)."
	MsgNoWorkspace = "No WorkSpace is assigned to you. Please contact your administrator."
	MsgStarting    = "Your WorkSpace is starting. Please try again in a minute."
	MsgNotAuthed   = "Log in first."
	MsgBusy        = "The login service is busy. Please try again in a few seconds."
	MsgTagsBusy    = "Too many connections are being set up from your network right now. Please try again in a minute."
)

// MsgSessionEnded says why a user who stayed away longer than the directory's session
// resume timeout (guide §26: "The default session resume timeout is 20 minutes") must log
// in again.
func MsgSessionEnded(timeout time.Duration) string {
	return fmt.Sprintf("Your session ended because you were disconnected for more than %s, the session resume timeout your administrator set. Log in again.", minutes(timeout))
}

func minutes(d time.Duration) string {
	if m := int(d / time.Minute); m == 1 {
		return "1 minute"
	} else if d%time.Minute == 0 {
		return strconv.Itoa(m) + " minutes"
	}
	return d.String()
}

// ProductName and version this broker reports in hello-resp.
const (
	ProductName    = "deskhost zeroclient broker"
	ProductVersion = "1.0"
	// ProbeProduct is the product name of a hello that only checks the broker is there.
	ProbeProduct = "QueryBrokerClient"
	// CookieName is the protocol's session cookie.
	CookieName = "JSESSIONID"
	// LogIDHeader is the header PCoIP clients send with every request; the session is found
	// by it when a client drops the cookie.
	LogIDHeader = "Client-Log-Id"
)

// Config is what the broker needs.
type Config struct {
	Auth       *auth.Service
	Sessions   *session.Store
	Tags       *tags.Store
	Workspaces workspaces.Backend
	Events     *events.Emitter
	Metrics    *metrics.Metrics
	Creds      *credstore.Store
	Log        *slog.Logger
	// Hostname is the broker's name (hello-resp, the target's hostname and SNI).
	Hostname string
	// GatewayPort is where clients stream from (4172).
	GatewayPort int
	// AdvertiseIP is the target ip-address; empty: the address the client reached us on.
	AdvertiseIP string
	// StartWait bounds how long allocate-resource waits for a WorkSpace to become AVAILABLE.
	StartWait time.Duration
	// PollInterval is how often it looks while waiting (default 1 s).
	PollInterval time.Duration
	Now          func() time.Time
}

// Broker serves the broker protocol.
type Broker struct{ c Config }

// New makes a broker.
func New(c Config) *Broker {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.PollInterval == 0 {
		c.PollInterval = time.Second
	}
	return &Broker{c: c}
}

// Handler routes the broker's paths; anything else is 404.
func (b *Broker) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/pcoip-broker/xml", b.serveXML)
	mux.HandleFunc(SelfServicePath, b.serveSelfService)
	mux.HandleFunc("/registration", b.serveRegistration)
	mux.HandleFunc("/activate", b.serveActivate)
	return mux
}

// clientAddr is the TCP peer: the guide wants the device's own address for IP access
// control groups and events, so X-Forwarded-For is never trusted.
func clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (b *Broker) serveXML(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "the broker protocol takes POST only", http.StatusMethodNotAllowed)
		return
	}
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || (ct != "application/xml" && ct != "text/xml") {
		http.Error(w, "Content-Type must be application/xml", http.StatusUnsupportedMediaType)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, brokerxml.MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			http.Error(w, fmt.Sprintf("request body over %d bytes", brokerxml.MaxBody), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "reading the request: "+err.Error(), http.StatusBadRequest)
		return
	}
	req, err := brokerxml.Decode(body)
	if err != nil {
		b.c.Log.Info("broker: bad request", "client", r.RemoteAddr, "err", err)
		http.Error(w, "bad broker request: "+err.Error(), http.StatusBadRequest)
		return
	}
	x := &exchange{b: b, w: w, r: r, from: clientAddr(r)}
	x.logID, _ = session.ParseLogID(r.Header.Get(LogIDHeader))
	// The session is the cookie's, from the address that made it; a client that dropped
	// the cookie is found by its Client-Log-Id (same address) and given the cookie again.
	if c, err := r.Cookie(CookieName); err == nil {
		x.sess, _ = b.c.Sessions.Get(c.Value, x.from)
		if x.sess == nil && req.Kind != brokerxml.KindHello {
			x.ended, _ = b.c.Sessions.EndedByTimeout(c.Value)
		}
	}
	if x.sess == nil && x.logID != "" {
		if x.sess, _ = b.c.Sessions.ByLogID(x.logID, x.from); x.sess != nil && req.Kind != brokerxml.KindHello {
			x.setCookie(x.sess.ID, 0)
		}
	}
	// A request in the wrong state changes nothing, not even the session's idle timer.
	defer func() {
		if x.sess != nil && x.touch {
			b.c.Sessions.Touch(x.sess)
		}
	}()
	if x.sess != nil {
		x.sess.Mu.Lock()
		defer x.sess.Mu.Unlock()
	}
	var resp any
	switch req.Kind {
	case brokerxml.KindHello:
		resp = x.hello(req.Hello)
	case brokerxml.KindAuthenticate:
		resp = x.authenticate(req.Auth)
	case brokerxml.KindGetResourceList:
		resp = x.resourceList()
	case brokerxml.KindAllocateResource:
		resp = x.allocate(req.Allocate)
	case brokerxml.KindBye:
		resp = x.bye()
	}
	out, err := brokerxml.Encode(resp)
	if err != nil {
		b.c.Log.Error("broker: encode response", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/xml; charset=UTF-8")
	w.Header().Set("Cache-Control", "no-store")
	// The protocol's responses are chunked. Asking for it in the header (rather than
	// flushing before the handler returns, which also makes net/http chunk) keeps the
	// headers, the one chunk and the last chunk in a single write: one TLS record for the
	// client to wait for instead of two.
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	w.Write(out)
}

// exchange is one request/response.
type exchange struct {
	b     *Broker
	w     http.ResponseWriter
	r     *http.Request
	from  netip.Addr
	logID string // the Client-Log-Id header, when well-formed
	sess  *session.Session
	touch bool // the request was valid in the session's state
	// ended: the request's cookie named a logged-in session that ended because its user
	// was away longer than the resume timeout.
	ended session.Ended
}

// notAuthed is the message for a request that needs a login: why the login is gone when
// the session timed out, else "Log in first."
func (x *exchange) notAuthed() string {
	if x.sess == nil && x.ended.ResumeTimeout > 0 {
		return MsgSessionEnded(x.ended.ResumeTimeout)
	}
	return MsgNotAuthed
}

func (x *exchange) log() *slog.Logger {
	l := x.b.c.Log.With("client", x.from.String())
	if x.sess != nil {
		l = l.With("directory", x.sess.DirectoryID, "user", x.sess.UserName)
	}
	return l
}

// setCookie sets the session cookie. net/http writes the header as "Set-Cookie", the one
// spelling PCoIP clients accept (a test reads it off the wire).
func (x *exchange) setCookie(value string, maxAge int) {
	x.w.Header().Del("Set-Cookie")
	http.SetCookie(x.w, &http.Cookie{Name: CookieName, Value: value, Path: "/pcoip-broker", Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, MaxAge: maxAge})
}

func (x *exchange) hello(h *brokerxml.Hello) any {
	resp := &brokerxml.HelloResp{BrokerInfo: brokerxml.BrokerInfo{
		ProductName: ProductName, ProductVersion: ProductVersion, Platform: "linux", Locale: "en_US",
		IPAddress: x.localIP(), Hostname: x.b.c.Hostname,
	}}
	var domains []string
	for _, d := range x.b.c.Auth.Directories() {
		if !d.Login.Deregistered {
			domains = append(domains, d.Name)
		}
	}
	resp.NextAuth = &brokerxml.NextAuth{Methods: []string{brokerxml.AuthMethodPassword}, Domains: domains}
	if h.ClientInfo.ProductName == ProbeProduct {
		return resp // a probe: answered, no session made
	}
	if x.sess != nil {
		x.b.c.Sessions.Delete(x.sess.ID) // a new hello starts over
	}
	sess, err := x.b.c.Sessions.New(x.from, x.logID)
	if err != nil {
		x.log().Warn("broker: no session", "err", err)
		resp.NextAuth = nil
		return resp
	}
	ci := h.ClientInfo
	sess.ProductName, sess.ProductVersion, sess.Platform, sess.Hostname = ci.ProductName, ci.ProductVersion, ci.Platform, ci.Hostname
	sess.Device = policy.ClassifyDevice(policy.ClientInfo{ProductName: ci.ProductName, ProductVersion: ci.ProductVersion, Platform: ci.Platform})
	x.setCookie(sess.ID, 0)
	x.log().Info("broker: hello", "product", ci.ProductName, "version", ci.ProductVersion, "platform", ci.Platform, "device", sess.Device)
	return resp
}

// localIP is the address the client reached the broker on.
func (x *exchange) localIP() string {
	if a, ok := x.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			return ap.Addr().Unmap().String()
		}
	}
	return ""
}

func authResp(method, id, str string) *brokerxml.AuthenticateResp {
	return &brokerxml.AuthenticateResp{Method: method, Result: brokerxml.Result{ID: id, Str: str}}
}

func (x *exchange) authenticate(a *brokerxml.Authenticate) any {
	if x.sess == nil {
		return authResp(a.Method, brokerxml.AuthFailedNotAuthed, "Send hello first.")
	}
	if a.Method == brokerxml.MethodPasscode {
		return x.passcode(a)
	}
	s := x.sess
	x.touch = true
	s.Lookup = nil // whatever was looked up was for the previous login
	ctx, cancel := context.WithTimeout(x.r.Context(), 60*time.Second)
	defer cancel()
	dir, user := x.b.c.Auth.Resolve(a.Username, a.Domain)
	dirID := ""
	if dir != nil {
		dirID = dir.ID
	}
	// The typed name goes to the audit trail and the log only once it is known to be a
	// user's: names that are no one's are often passwords typed in the wrong field.
	known := false
	if dir != nil && dir.Login.Kind() == catalog.TypeLocal {
		_, known = dir.FindUser(user)
	}
	refuse := func(id, msg, reason string) any {
		audit := map[string]string{"clientIpAddress": x.from.String(), "directoryId": dirID,
			"clientPlatform": policy.EventPlatform(s.Device), "productName": s.ProductName}
		logUser := "(not a known user)"
		if known {
			audit["userName"], logUser = a.Username, a.Username
		}
		x.b.c.Metrics.Logins.WithLabelValues(dirID, id).Inc()
		x.b.c.Events.Audit("authenticate", id, reason, audit)
		x.log().Info("broker: login refused", "typed_user", logUser, "result", id, "reason", reason)
		s.SetStage(session.Greeted)
		return authResp(a.Method, id, msg)
	}
	if dir != nil {
		// Checks that depend on the directory but not on who the user is come first, so
		// they reveal nothing about users.
		if !dir.Login.IPAllowed(x.from) {
			return refuse(brokerxml.AuthFailedDenied, MsgNotAuthorized, "client address not in the directory's IP access control groups")
		}
		if !dir.Login.DeviceAccess.Allowed(s.Device) {
			return refuse(brokerxml.AuthFailedDenied, MsgNotAuthorized, "device type "+string(s.Device)+" is not allowed")
		}
		if err := policy.CheckFirmware(s.Device, s.ProductVersion); err != nil {
			return refuse(brokerxml.AuthFailedDenied, MsgNotAuthorized, err.Error())
		}
	}
	res := x.b.c.Auth.Password(ctx, dir, user, a.Password, x.from)
	known = res.KnownUser
	switch res.Outcome {
	case auth.OK, auth.NeedPasscode:
		s.DirectoryID, s.UserName, s.RADIUSState, s.Rounds = dir.ID, res.UserName, nil, 0
		// The WorkSpace is looked up while the client answers the MFA prompt (or sends its
		// next request): get-resource-list then finds the answer waiting.
		x.prefetch()
		if res.Outcome == auth.NeedPasscode {
			s.SetStage(session.NeedPasscode)
			x.b.c.Metrics.Logins.WithLabelValues(dir.ID, brokerxml.AuthIncomplete).Inc()
			x.log().Info("broker: password accepted; MFA next")
			r := authResp(a.Method, brokerxml.AuthIncomplete, res.Prompt)
			r.NextAuth = &brokerxml.NextAuth{Methods: []string{brokerxml.AuthMethodPasscode}, Prompt: res.Prompt}
			return r
		}
		return x.loggedIn(a.Method)
	case auth.Busy:
		return refuse(brokerxml.AuthFailedBusy, MsgBusy, res.Reason)
	case auth.Locked:
		return refuse(brokerxml.AuthFailedLocked, MsgLocked, res.Reason)
	case auth.MFANotReady:
		return refuse(brokerxml.AuthFailedMFASetup, MsgMFASetup, res.Reason)
	case auth.Unavailable:
		x.log().Error("broker: directory unavailable", "err", res.Reason)
		return refuse(brokerxml.AuthFailedUnavail, MsgUnavailable, res.Reason)
	}
	return refuse(brokerxml.AuthFailed, MsgBadLogin, res.Reason)
}

// maxChallengeRounds bounds RADIUS challenge-response rounds in one login.
const maxChallengeRounds = 3

func (x *exchange) passcode(a *brokerxml.Authenticate) any {
	s := x.sess
	dir, user := x.b.c.Auth.Resolve(a.Username, "")
	if s.Stage() != session.NeedPasscode || !strings.EqualFold(user, s.UserName) || (dir != nil && dir.ID != s.DirectoryID) {
		return authResp(a.Method, brokerxml.AuthFailedNotAuthed, "Log in with your password first.")
	}
	x.touch = true
	dir = x.b.c.Auth.ByID(s.DirectoryID)
	ctx, cancel := context.WithTimeout(x.r.Context(), 60*time.Second)
	defer cancel()
	res := x.b.c.Auth.Passcode(ctx, dir, s.UserName, a.Passcode, s.RADIUSState, x.from)
	audit := map[string]string{"clientIpAddress": x.from.String(), "directoryId": dir.ID, "userName": s.UserName,
		"clientPlatform": policy.EventPlatform(s.Device), "productName": s.ProductName}
	refuse := func(id, msg string) any {
		x.b.c.Metrics.Logins.WithLabelValues(dir.ID, id).Inc()
		x.b.c.Events.Audit("authenticate", id, res.Reason, audit)
		x.log().Info("broker: passcode refused", "result", id, "reason", res.Reason)
		s.SetStage(session.Greeted) // start again from the password
		s.RADIUSState, s.Rounds, s.Lookup = nil, 0, nil
		return authResp(a.Method, id, msg)
	}
	switch res.Outcome {
	case auth.OK:
		return x.loggedIn(a.Method)
	case auth.NeedPasscode:
		s.Rounds++
		if s.Rounds > maxChallengeRounds {
			res.Reason = "too many RADIUS challenges"
			return refuse(brokerxml.AuthFailedPasscode, MsgBadPasscode)
		}
		s.RADIUSState = res.State
		r := authResp(a.Method, brokerxml.AuthIncomplete, res.Prompt)
		r.NextAuth = &brokerxml.NextAuth{Methods: []string{brokerxml.AuthMethodPasscode}, Prompt: res.Prompt}
		return r
	case auth.Busy:
		return refuse(brokerxml.AuthFailedBusy, MsgBusy)
	case auth.Locked:
		return refuse(brokerxml.AuthFailedLocked, MsgLocked)
	case auth.MFANotReady:
		return refuse(brokerxml.AuthFailedMFASetup, MsgMFASetup)
	case auth.Unavailable:
		x.log().Error("broker: MFA server unavailable", "err", res.Reason)
		return refuse(brokerxml.AuthFailedUnavail, MsgUnavailable)
	}
	return refuse(brokerxml.AuthFailedPasscode, MsgBadPasscode)
}

func (x *exchange) loggedIn(method string) any {
	s := x.sess
	var resume time.Duration
	if d := x.b.c.Auth.ByID(s.DirectoryID); d != nil {
		resume = d.Login.Session.ResumeTimeout()
	}
	x.b.c.Sessions.LoggedIn(s, resume)
	s.RADIUSState, s.Rounds = nil, 0
	s.LoginTime, s.AccessEmitted = x.b.c.Now(), false
	x.prefetch() // unless the one from the password step is under way or fresh
	x.b.c.Metrics.Logins.WithLabelValues(s.DirectoryID, brokerxml.AuthComplete).Inc()
	x.log().Info("broker: logged in", "device", s.Device)
	return authResp(method, brokerxml.AuthComplete, "Authentication complete.")
}

// lookupFresh is how long hostd's description of a user's WorkSpace stands in for asking
// again. It spans the few round trips of a client going straight from the password to
// allocate-resource (the lookup started at the password step serves get-resource-list,
// and that one allocate-resource), and no more: a client that lingers at a prompt or at
// the list gets the state as it is then.
const lookupFresh = 2 * time.Second

// prefetch starts looking the session's WorkSpace up in the background, unless a lookup
// is under way or fresh.
func (x *exchange) prefetch() {
	s := x.sess
	if l := s.Lookup; l != nil && l.DirectoryID == s.DirectoryID && l.UserName == s.UserName {
		select {
		case <-l.Done:
			if l.Err == nil && x.b.c.Now().Sub(l.At) < lookupFresh {
				return
			}
		default:
			return // under way
		}
	}
	l := &session.WorkspaceLookup{DirectoryID: s.DirectoryID, UserName: s.UserName, Done: make(chan struct{})}
	s.Lookup = l
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		l.WS, l.OK, l.Err = x.b.c.Workspaces.ForUser(ctx, l.DirectoryID, l.UserName)
		l.At = x.b.c.Now()
		close(l.Done)
	}()
}

// workspace is the session user's WorkSpace: the login's lookup when it is fresh (waiting
// for it if it is under way), else hostd's answer now.
func (x *exchange) workspace(ctx context.Context) (workspaces.Workspace, bool, error) {
	s := x.sess
	if l := s.Lookup; l != nil && l.DirectoryID == s.DirectoryID && l.UserName == s.UserName {
		select {
		case <-l.Done:
		case <-ctx.Done():
			return workspaces.Workspace{}, false, ctx.Err()
		}
		if l.Err == nil && x.b.c.Now().Sub(l.At) < lookupFresh {
			return l.WS, l.OK, nil
		}
	}
	s.Lookup = nil
	ws, ok, err := x.b.c.Workspaces.ForUser(ctx, s.DirectoryID, s.UserName)
	if err != nil {
		return ws, ok, err
	}
	l := &session.WorkspaceLookup{DirectoryID: s.DirectoryID, UserName: s.UserName, Done: make(chan struct{}),
		WS: ws, OK: ok, At: x.b.c.Now()}
	close(l.Done)
	s.Lookup = l
	return ws, ok, nil
}

func (x *exchange) resourceList() any {
	resp := &brokerxml.GetResourceListResp{}
	if x.sess == nil || x.sess.Stage() != session.Authenticated {
		resp.Result = brokerxml.Result{ID: brokerxml.ListNotAuthed, Str: x.notAuthed()}
		return resp
	}
	s := x.sess
	x.touch = true
	ws, ok, err := x.workspace(x.r.Context())
	if err != nil {
		x.log().Error("broker: list WorkSpaces", "err", err)
		resp.Result = brokerxml.Result{ID: brokerxml.ListNoResources, Str: MsgLaunchError}
		return resp
	}
	if !ok {
		resp.Result = brokerxml.Result{ID: brokerxml.ListNoResources, Str: MsgNoWorkspace}
		return resp
	}
	if !protocolOK(ws, s.Device) {
		resp.Result = brokerxml.Result{ID: brokerxml.ListNoResources, Str: MsgNotOnDevice}
		return resp
	}
	name := ws.ComputerName
	if name == "" {
		name = ws.ID
	}
	resp.Result = brokerxml.Result{ID: brokerxml.ListSuccessful, Str: "1 WorkSpace."}
	resp.Resources = []brokerxml.Resource{{
		Name: name, ID: ws.ID, Type: brokerxml.ResourceType{SessionType: "VDI", Value: "DESKTOP"}, State: ws.State,
		Protocols: []brokerxml.Protocol{{IsDefault: true, Value: ws.Protocol}},
	}}
	return resp
}

// protocolOK: "PCoIP zero clients are compatible only with WorkSpaces bundles that are using
// the PCoIP protocol."
func protocolOK(ws workspaces.Workspace, d catalog.DeviceType) bool {
	return d != catalog.DeviceZeroClient || ws.Protocol == "PCOIP"
}

// Action is what allocate-resource does with a WorkSpace in its current state.
type Action int

const (
	// Issue a connect tag.
	Issue Action = iota
	// Start the WorkSpace (a STOPPED AutoStop one), then wait.
	Start
	// Wait for a transition to finish.
	Wait
	// Refuse with a result id and message.
	Refuse
)

// Decide is allocate-resource's rule for a WorkSpace in a state (pure logic): AVAILABLE gets
// a tag; a STOPPED AutoStop WorkSpace is started; transitions are waited for; UNHEALTHY and
// ADMIN_MAINTENANCE get the guide's messages; a WSP WorkSpace is not for a zero client.
func Decide(ws workspaces.Workspace, d catalog.DeviceType) (Action, string, string) {
	if !protocolOK(ws, d) {
		return Refuse, brokerxml.AllocNotOnDevice, MsgNotOnDevice
	}
	switch ws.State {
	case "AVAILABLE":
		return Issue, "", ""
	case "STOPPED":
		if ws.RunningMode == "AUTO_STOP" {
			return Start, "", ""
		}
		return Refuse, brokerxml.AllocFailed, MsgLaunchError
	case "PENDING", "STARTING", "REBOOTING", "REBUILDING", "RESTORING", "UPDATING":
		return Wait, "", ""
	case "UNHEALTHY", "IMPAIRED":
		return Refuse, brokerxml.AllocUnhealthy, MsgUnhealthy
	case "ADMIN_MAINTENANCE", "MAINTENANCE":
		return Refuse, brokerxml.AllocMaintenance, MsgMaintenance
	}
	return Refuse, brokerxml.AllocFailed, MsgLaunchError
}

func (x *exchange) allocate(a *brokerxml.AllocateResource) any {
	resp := &brokerxml.AllocateResourceResp{}
	if x.sess == nil || x.sess.Stage() != session.Authenticated {
		resp.Result = brokerxml.Result{ID: brokerxml.AllocNotAuthed, Str: x.notAuthed()}
		return resp
	}
	s := x.sess
	x.touch = true
	ctx := x.r.Context()
	ws, ok, err := x.workspace(ctx)
	if err != nil || !ok || ws.ID != a.ResourceID {
		if err != nil {
			x.log().Error("broker: find WorkSpace", "err", err)
		}
		resp.Result = brokerxml.Result{ID: brokerxml.AllocNoResource, Str: "That resource is not yours or does not exist."}
		return resp
	}
	labels := []string{s.DirectoryID, ws.ID}
	x.b.c.Metrics.ConnectionAttempt.WithLabelValues(labels...).Inc()
	fail := func(id, msg, reason string) any {
		x.b.c.Metrics.ConnectionFailure.WithLabelValues(labels...).Inc()
		x.b.c.Events.Audit("allocate-resource", id, reason, map[string]string{"clientIpAddress": x.from.String(),
			"directoryId": s.DirectoryID, "userName": s.UserName, "workspaceId": ws.ID, "state": ws.State})
		x.log().Info("broker: allocation refused", "workspace", ws.ID, "state", ws.State, "result", id, "reason", reason)
		resp.Result = brokerxml.Result{ID: id, Str: msg}
		return resp
	}
	// The rules may have changed since the login.
	dir := x.b.c.Auth.ByID(s.DirectoryID)
	if dir == nil || !dir.Login.IPAllowed(x.from) {
		return fail(brokerxml.AllocDenied, MsgNotAuthorized, "client address not in the directory's IP access control groups")
	}
	deadline := x.b.c.Now().Add(x.b.c.StartWait)
	started := false
	for {
		act, id, msg := Decide(ws, s.Device)
		switch act {
		case Refuse:
			return fail(id, msg, "WorkSpace is "+ws.State)
		case Start:
			if started {
				break // hostd has not moved it yet
			}
			if err := x.b.c.Workspaces.Start(ctx, ws.ID); err != nil {
				return fail(brokerxml.AllocFailed, MsgLaunchError, err.Error())
			}
			started, s.Lookup = true, nil // the state it saw is changing
			x.log().Info("broker: starting stopped AutoStop WorkSpace", "workspace", ws.ID)
		case Issue:
			return x.issue(ws, resp)
		}
		if !x.b.c.Now().Before(deadline) {
			return fail(brokerxml.AllocStarting, MsgStarting, "WorkSpace still "+ws.State+" after "+x.b.c.StartWait.String())
		}
		select {
		case <-ctx.Done():
			return fail(brokerxml.AllocFailed, MsgLaunchError, "client went away")
		case <-time.After(x.b.c.PollInterval):
		}
		if ws, err = x.b.c.Workspaces.Describe(ctx, ws.ID); err != nil {
			return fail(brokerxml.AllocFailed, MsgLaunchError, err.Error())
		}
	}
}

func (x *exchange) issue(ws workspaces.Workspace, resp *brokerxml.AllocateResourceResp) any {
	s := x.sess
	failed := func(msg string, err error) any {
		x.b.c.Metrics.ConnectionFailure.WithLabelValues(s.DirectoryID, ws.ID).Inc()
		x.log().Warn("broker: no connect tag", "workspace", ws.ID, "err", err)
		resp.Result = brokerxml.Result{ID: brokerxml.AllocFailed, Str: msg}
		return resp
	}
	var target *brokerxml.Target
	var expires time.Time
	// In a fleet another host may run the WorkSpace: the tag is then its gateway's, the
	// only one that can redeem it, and the client streams from there.
	if r, ok := x.b.c.Workspaces.(workspaces.Router); ok {
		local, err := r.Local(x.r.Context(), ws.ID)
		if err != nil {
			return failed(MsgLaunchError, err)
		}
		if !local {
			g, err := r.RemoteTag(x.r.Context(), workspaces.TagRequest{WorkspaceID: ws.ID, DirectoryID: s.DirectoryID, UserName: s.UserName,
				Client: x.from, SessionID: newSessionID()})
			if err != nil {
				return failed(MsgLaunchError, err)
			}
			host, port, err := net.SplitHostPort(g.Gateway)
			p, perr := strconv.Atoi(port)
			if err != nil || perr != nil {
				return failed(MsgLaunchError, fmt.Errorf("gateway address %q of host %s: not host:port", g.Gateway, g.HostID))
			}
			target = &brokerxml.Target{IPAddress: host, Hostname: g.Hostname, SNI: g.Hostname, Port: p, SessionID: g.SessionID, ConnectTag: g.ConnectTag}
			expires = g.Expires
			x.log().Info("broker: the WorkSpace runs on another host: its gateway issued the tag", "workspace", ws.ID, "host", g.HostID, "gateway", g.Gateway)
		}
	}
	if target == nil {
		t, err := x.b.c.Tags.Issue(tags.Tag{SessionID: newSessionID(), DirectoryID: s.DirectoryID, UserName: s.UserName,
			WorkspaceID: ws.ID, Client: x.from})
		if err != nil {
			msg := MsgLaunchError
			if errors.Is(err, tags.ErrTooMany) {
				msg = MsgTagsBusy
			}
			return failed(msg, err)
		}
		ip := x.b.c.AdvertiseIP
		if ip == "" {
			ip = x.localIP()
		}
		target = &brokerxml.Target{IPAddress: ip, Hostname: x.b.c.Hostname, SNI: x.b.c.Hostname, Port: x.b.c.GatewayPort,
			SessionID: t.SessionID, ConnectTag: t.Value}
		expires = t.Expires
	}
	x.b.c.Sessions.Allocated(s, ws.ID)
	resp.Result = brokerxml.Result{ID: brokerxml.AllocSuccessful, Str: "Connect to your WorkSpace with the connect tag within 60 seconds."}
	resp.Target = target
	resp.ResourceID, resp.Protocol = ws.ID, ws.Protocol
	if !s.AccessEmitted {
		// One "WorkSpaces Access" event per successful login: the user has logged in to a
		// WorkSpace. A second allocate in the same login emits none.
		err := x.b.c.Events.Access(events.Access{ClientIP: x.from.String(), ProductName: policy.EventProduct(s.Device, s.ProductName),
			Platform: policy.EventPlatform(s.Device), DirectoryID: s.DirectoryID, WorkspaceID: ws.ID, LoginTime: s.LoginTime})
		if err != nil {
			x.log().Error("broker: access event", "err", err)
		}
		s.AccessEmitted = true
	}
	x.log().Info("broker: allocated", "workspace", ws.ID, "session_id", target.SessionID, "expires", expires.Format(time.RFC3339))
	return resp
}

// newSessionID is the gateway session's id: a decimal number, as PCoIP session ids are.
func newSessionID() string {
	var b [8]byte
	rand.Read(b[:])
	return strconv.FormatUint(binary.BigEndian.Uint64(b[:])>>1, 10)
}

func (x *exchange) bye() any {
	if x.sess != nil {
		x.b.c.Sessions.Delete(x.sess.ID)
		x.log().Info("broker: bye")
	}
	x.setCookie("", -1)
	return &brokerxml.ByeResp{}
}
