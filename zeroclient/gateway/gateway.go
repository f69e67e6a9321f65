// Package gateway is the streaming gateway on TCP 4172: it speaks RFB 3.8 to the client
// with VeNCrypt as the only security type (TLS with the broker's certificate, then VNC
// authentication or Plain with the connect tag as the one-time password), checks the tag
// and the client's address, connects to the WorkSpace's VNC unix socket as an RFB client
// (qemu offers None there), forwards ServerInit and then relays bytes unchanged both ways.
// Unencrypted RFB is refused. A TCP health probe (anything that is not an RFB version
// after the greeting) is echoed back, so 4172 answers TCP health checks too.
package gateway

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"deskhost/zeroclient/metrics"
	"deskhost/zeroclient/rfb"
	"deskhost/zeroclient/tags"
)

// Config is what the gateway needs.
type Config struct {
	TLS  *tls.Config
	Tags *tags.Store
	// Socket returns the VNC unix socket of a WorkSpace.
	Socket func(workspaceID string) string
	// Allowed reports whether the directory's IP access control groups (as they are now)
	// let addr in.
	Allowed func(directoryID string, addr netip.Addr) bool
	// WebAllowed reports whether the directory's device access (as it is now) lets web
	// clients in: Recheck cuts the web sessions of a directory that no longer does.
	WebAllowed       func(directoryID string) bool
	HandshakeTimeout time.Duration
	Metrics          *metrics.Metrics
	Log              *slog.Logger
	Now              func() time.Time
	// LatencyInterval is how often a session's round trip is sampled (InSessionLatency);
	// zero: LatencyInterval.
	LatencyInterval time.Duration
	// SessionsChanged, if set, is called (without blocking) whenever a session begins or
	// ends: Connected has changed.
	SessionsChanged func()
}

// Offered VeNCrypt sub-types: Plain first (the whole tag), then VNC (its first 8 characters).
var Offered = []uint32{rfb.VeNCryptX509Plain, rfb.VeNCryptX509Vnc}

// Gateway relays desktops.
type Gateway struct {
	c      Config
	mu     sync.Mutex
	active map[string]*relay // by WorkSpace: a new session replaces the old one
	wg     sync.WaitGroup
}

// New makes a gateway.
func New(c Config) *Gateway {
	if c.LatencyInterval <= 0 {
		c.LatencyInterval = LatencyInterval
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return &Gateway{c: c, active: map[string]*relay{}}
}

// Connected lists the WorkSpaces a user is streaming now, in id order.
func (g *Gateway) Connected() []string {
	g.mu.Lock()
	ids := make([]string, 0, len(g.active))
	for id := range g.active {
		ids = append(ids, id)
	}
	g.mu.Unlock()
	slices.Sort(ids)
	return ids
}

func (g *Gateway) sessionsChanged() {
	if g.c.SessionsChanged != nil {
		g.c.SessionsChanged()
	}
}

// Serve accepts connections until l is closed, then waits for nothing: relays end when
// their connections do (Close ends them).
func (g *Gateway) Serve(l net.Listener) error {
	for {
		conn, err := l.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			return err
		}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			defer g.recoverConn(conn, "connection")
			g.handle(conn)
		}()
	}
}

// recoverConn ends a connection whose goroutine panicked, instead of the whole process:
// one client's session must not take every other user's down with it.
func (g *Gateway) recoverConn(conn net.Conn, what string) {
	if r := recover(); r != nil {
		g.c.Log.Error("gateway: panic; connection closed", "what", what, "client", conn.RemoteAddr().String(),
			"err", fmt.Sprint(r), "stack", string(debug.Stack()))
		conn.Close()
	}
}

// Recheck ends the sessions whose client address the directory's IP access control
// groups no longer allow (Allowed, as it is now), and the web sessions of a directory
// whose device access no longer allows Web Access (WebAllowed), and returns how many: "If
// you remove a rule that was used to allow a connection to a WorkSpace, the user is
// disconnected".
func (g *Gateway) Recheck() int {
	if g.c.Allowed == nil {
		return 0
	}
	type cutSession struct {
		r   *relay
		why string
	}
	g.mu.Lock()
	var cut []cutSession
	for _, r := range g.active {
		switch {
		case !g.c.Allowed(r.tag.DirectoryID, r.from):
			cut = append(cut, cutSession{r, "the client address is no longer allowed by the directory's IP access control groups"})
		case r.web && g.c.WebAllowed != nil && !g.c.WebAllowed(r.tag.DirectoryID):
			cut = append(cut, cutSession{r, "the directory no longer allows Web Access"})
		}
	}
	g.mu.Unlock()
	for _, c := range cut {
		g.c.Log.Info("gateway: session cut: "+c.why,
			"client", c.r.from.String(), "directory", c.r.tag.DirectoryID, "workspace", c.r.tag.WorkspaceID, "session_id", c.r.tag.SessionID)
		c.r.close()
	}
	return len(cut)
}

// Close ends every relay and waits for their goroutines.
func (g *Gateway) Close() {
	g.mu.Lock()
	for _, r := range g.active {
		r.close()
	}
	g.mu.Unlock()
	g.wg.Wait()
}

// errRefused carries the reason sent to the client in SecurityResult.
type errRefused struct{ reason, log string }

func (e *errRefused) Error() string { return e.log }

// Reasons the client is told. A bad tag gets one message whatever was wrong with it.
const (
	ReasonBadTag     = "The connect tag is not valid (used, expired, or for another device). Log in again."
	ReasonNotAllowed = "This device is not authorized to access the WorkSpace. Please contact your administrator for assistance."
	ReasonLaunch     = "An error occurred while launching your WorkSpace. Please try again."
	ReasonPlainRFB   = "Unencrypted connections are refused: use VeNCrypt (TLS) with your connect tag."
)

func (g *Gateway) handle(conn net.Conn) {
	from := netip.Addr{}
	if ap, err := netip.ParseAddrPort(conn.RemoteAddr().String()); err == nil {
		from = ap.Addr().Unmap()
	}
	log := g.c.Log.With("client", from.String())
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	conn.SetDeadline(time.Now().Add(g.c.HandshakeTimeout))
	if _, err := conn.Write([]byte(rfb.ProtocolVersion38)); err != nil {
		conn.Close()
		return
	}
	// The client's first bytes: an RFB version, or a health probe to echo.
	first := make([]byte, 12)
	n, err := conn.Read(first)
	for err == nil && n < 12 && bytes.HasPrefix([]byte("RFB "), first[:min(n, 4)]) {
		var m int
		m, err = conn.Read(first[n:])
		n += m
	}
	if err != nil && n == 0 {
		conn.Close()
		return
	}
	if n < 4 || string(first[:4]) != "RFB " {
		echo(conn, first[:n])
		return
	}
	major, minor, err := rfb.ParseVersion(first[:n])
	if err != nil || major != 3 {
		log.Info("gateway: not RFB 3.x", "err", err)
		conn.Close()
		return
	}
	if minor < 7 {
		rfb.WriteSecurityFailure(conn, minor, "RFB 3.7 or later is required (VeNCrypt)")
		conn.Close()
		return
	}
	r, err := g.handshake(conn, minor, from)
	if err != nil {
		log.Info("gateway: connection refused", "err", err)
		return
	}
	r.run(g)
}

// ReasonWebSecurity is what a web client that does not take security type None is told.
const ReasonWebSecurity = "The web client authenticates with its connect tag before RFB starts: choose security type None."

// ServeWeb runs the session of a web client, whose WebSocket (conn, over the broker's
// TLS) was opened with tag, already redeemed for this address and user. The browser
// proved itself with the tag, so RFB offers it security type None; from there the path is
// the VeNCrypt clients' own (attach): the IP groups as they are now, the display,
// takeover of an earlier session, presence, metrics. closeNow ends conn without waiting
// on the client (a takeover or a cut must not wait on a browser that stopped reading);
// conn's own Close says goodbye when the display ends the session. It returns when the
// session ends.
func (g *Gateway) ServeWeb(conn, transport net.Conn, closeNow func(), tag tags.Tag, from netip.Addr) {
	g.wg.Add(1)
	defer g.wg.Done()
	defer g.recoverConn(conn, "web connection")
	from = from.Unmap()
	conn.SetDeadline(time.Now().Add(g.c.HandshakeTimeout))
	labels := []string{tag.DirectoryID, tag.WorkspaceID}
	fail := func(err error) {
		g.c.Metrics.ConnectionFailure.WithLabelValues(labels...).Inc()
		g.c.Log.Info("gateway: web connection refused", "client", from.String(), "workspace", tag.WorkspaceID, "err", err)
		conn.Close()
	}
	if _, err := conn.Write([]byte(rfb.ProtocolVersion38)); err != nil {
		fail(err)
		return
	}
	var ver [12]byte
	if _, err := io.ReadFull(conn, ver[:]); err != nil {
		fail(fmt.Errorf("client version: %w", err))
		return
	}
	major, minor, err := rfb.ParseVersion(ver[:])
	if err != nil || major != 3 || minor < 7 {
		rfb.WriteSecurityFailure(conn, minor, "RFB 3.7 or later is required")
		fail(fmt.Errorf("client version %q: %v", ver[:], err))
		return
	}
	if _, err := conn.Write([]byte{1, rfb.SecNone}); err != nil {
		fail(err)
		return
	}
	var choice [1]byte
	if _, err := io.ReadFull(conn, choice[:]); err != nil {
		fail(fmt.Errorf("security type: %w", err))
		return
	}
	if choice[0] != rfb.SecNone {
		rfb.WriteSecurityResult(conn, minor, false, ReasonWebSecurity)
		fail(fmt.Errorf("web client chose security type %d", choice[0]))
		return
	}
	r, err := g.attach(conn, abortConn{conn, closeNow}, nil, minor, tag, from, "WebSocket")
	if err != nil {
		g.c.Log.Info("gateway: web connection refused", "client", from.String(), "err", err)
		return
	}
	r.web, r.transport = true, transport
	r.run(g)
}

// abortConn is a connection whose Close ends it at once.
type abortConn struct {
	net.Conn
	abort func()
}

func (c abortConn) Close() error { c.abort(); return nil }

// handshake runs everything up to the relay; on failure the client has been told why and
// conn is closed.
func (g *Gateway) handshake(conn net.Conn, minor int, from netip.Addr) (*relay, error) {
	if _, err := conn.Write([]byte{1, rfb.SecVeNCrypt}); err != nil {
		conn.Close()
		return nil, err
	}
	var choice [1]byte
	if _, err := io.ReadFull(conn, choice[:]); err != nil {
		conn.Close()
		return nil, fmt.Errorf("security type: %w", err)
	}
	if choice[0] != rfb.SecVeNCrypt {
		rfb.WriteSecurityResult(conn, minor, false, ReasonPlainRFB)
		conn.Close()
		return nil, fmt.Errorf("client chose security type %d, not VeNCrypt", choice[0])
	}
	sub, err := rfb.ServerVeNCrypt(conn, Offered)
	if err != nil {
		conn.Close()
		return nil, err
	}
	// The TLS layer writes through a coalescer: during the relay, the records of one chunk
	// of the display go to the client in a few large writes instead of one write each.
	cw := newCoalescer(conn)
	tc := tls.Server(cw, g.c.TLS)
	if err := tc.Handshake(); err != nil {
		conn.Close()
		return nil, fmt.Errorf("TLS: %w", err)
	}
	var tag tags.Tag
	switch sub {
	case rfb.VeNCryptX509Plain:
		user, password, err := rfb.ServerPlain(tc)
		if err != nil {
			tc.Close()
			return nil, fmt.Errorf("Plain credentials: %w", err)
		}
		tag, err = g.c.Tags.RedeemPlain(password, from)
		if err == nil && user != "" && !strings.EqualFold(userPart(user), tag.UserName) {
			err = fmt.Errorf("Plain user %q is not the tag's user", user)
		}
		if err != nil {
			return nil, g.refuse(tc, minor, &errRefused{ReasonBadTag, "Plain: " + err.Error()})
		}
	case rfb.VeNCryptX509Vnc:
		ch, resp, err := rfb.ServerVNCChallenge(tc)
		if err != nil {
			tc.Close()
			return nil, fmt.Errorf("VNC auth: %w", err)
		}
		if tag, err = g.c.Tags.RedeemVNC(ch, resp, from); err != nil {
			return nil, g.refuse(tc, minor, &errRefused{ReasonBadTag, "VNC auth: " + err.Error()})
		}
	}
	return g.attach(tc, cw, cw, minor, tag, from, rfb.VeNCryptName(sub))
}

// attach is the part of a session after the tag was redeemed, the same for every kind of
// client: the directory's IP access control groups (as they are now), the WorkSpace's
// display, SecurityResult, ClientInit and ServerInit. client is what carries RFB to the
// client (TLS, or a WebSocket); raw is what closes it at once; co, when not nil, gathers
// client's writes (the TLS path). On failure the client has been told why and is closed.
func (g *Gateway) attach(client net.Conn, raw net.Conn, co *coalescer, minor int, tag tags.Tag, from netip.Addr, security string) (*relay, error) {
	tc := client
	labels := []string{tag.DirectoryID, tag.WorkspaceID}
	failed := func(e *errRefused) error {
		g.c.Metrics.ConnectionFailure.WithLabelValues(labels...).Inc()
		g.c.Metrics.SessionDisconnect.WithLabelValues(labels...).Inc()
		return g.refuse(tc, minor, e)
	}
	if g.c.Allowed != nil && !g.c.Allowed(tag.DirectoryID, from) {
		return nil, failed(&errRefused{ReasonNotAllowed, "client address no longer allowed by the directory's IP access control groups"})
	}
	// Reach the desktop before telling the client it is in, so a display that cannot be
	// reached gets the guide's launch error instead of a dropped connection.
	up, err := net.DialTimeout("unix", g.c.Socket(tag.WorkspaceID), 5*time.Second)
	if err != nil {
		return nil, failed(&errRefused{ReasonLaunch, "WorkSpace display: " + err.Error()})
	}
	up.SetDeadline(time.Now().Add(g.c.HandshakeTimeout))
	if err := rfb.ClientNone(up); err != nil {
		up.Close()
		return nil, failed(&errRefused{ReasonLaunch, "WorkSpace display handshake: " + err.Error()})
	}
	if err := rfb.WriteSecurityResult(tc, minor, true, ""); err != nil {
		up.Close()
		tc.Close()
		return nil, err
	}
	var shared [1]byte
	if _, err := io.ReadFull(tc, shared[:]); err != nil {
		up.Close()
		tc.Close()
		return nil, fmt.Errorf("ClientInit: %w", err)
	}
	si, err := rfb.ClientInit(up, shared[0] != 0)
	if err != nil {
		up.Close()
		tc.Close()
		g.c.Metrics.ConnectionFailure.WithLabelValues(labels...).Inc()
		g.c.Metrics.SessionDisconnect.WithLabelValues(labels...).Inc()
		return nil, fmt.Errorf("WorkSpace ServerInit: %w", err)
	}
	si.Name = tag.WorkspaceID // what the viewer's title shows
	if _, err := tc.Write(si.Bytes()); err != nil {
		up.Close()
		tc.Close()
		return nil, err
	}
	tc.SetDeadline(time.Time{})
	up.SetDeadline(time.Time{})
	g.c.Metrics.ConnectionSuccess.WithLabelValues(labels...).Inc()
	g.c.Metrics.SessionLaunchTime.WithLabelValues(labels...).Observe(g.c.Now().Sub(tag.Issued).Seconds())
	g.c.Log.Info("gateway: session started", "client", from.String(), "directory", tag.DirectoryID, "user", tag.UserName,
		"workspace", tag.WorkspaceID, "session_id", tag.SessionID, "security", security,
		"size", fmt.Sprintf("%dx%d", si.Width, si.Height))
	return &relay{tag: tag, client: tc, raw: raw, co: co, up: up, from: from}, nil
}

// userPart strips a DOMAIN\ prefix from a Plain user name.
func userPart(u string) string {
	if _, rest, ok := strings.Cut(u, `\`); ok {
		return rest
	}
	return u
}

func (g *Gateway) refuse(tc net.Conn, minor int, e *errRefused) error {
	rfb.WriteSecurityResult(tc, minor, false, e.reason)
	tc.Close()
	return e
}

// relay is one client's session.
type relay struct {
	tag    tags.Tag
	client net.Conn   // RFB to the client: TLS, or a WebSocket
	raw    net.Conn   // what client runs over (TCP), closed at once by close
	co     *coalescer // gathers client's writes (TLS); nil for a WebSocket
	up     net.Conn
	from   netip.Addr
	web    bool // a Web Access session (ServeWeb)
	// transport is the TCP connection a Web Access session's WebSocket runs over (nil:
	// raw is that connection, or wraps it).
	transport net.Conn
	once      sync.Once
	replaced  bool
}

// close ends the session from any goroutine at once: it closes the TCP connection under
// the TLS layer rather than the TLS connection, whose close_notify could wait up to 5 s on
// a client that has stopped reading. The display's end of a session says goodbye properly
// (see run).
func (r *relay) close() {
	r.once.Do(func() {
		r.raw.Close()
		r.up.Close()
	})
}

func (r *relay) run(g *Gateway) {
	labels := []string{r.tag.DirectoryID, r.tag.WorkspaceID}
	g.mu.Lock()
	if old := g.active[r.tag.WorkspaceID]; old != nil {
		// A reconnect takes the desktop over: the previous session ends.
		old.replaced = true
		old.close()
	}
	g.active[r.tag.WorkspaceID] = r
	g.mu.Unlock()
	g.sessionsChanged()
	g.c.Metrics.UserConnected.WithLabelValues(labels...).Set(1)
	stopSampling, sampled := make(chan struct{}), make(chan struct{})
	go func() { defer close(sampled); r.sampleLatency(g, labels, stopSampling) }()
	start := g.c.Now()
	var toUp, toClient int64
	done := make(chan struct{})
	// The session's end is deferred, so that it is recorded even if the relay panics (the
	// connection's recover then closes it).
	defer func() {
		r.close()
		<-done
		close(stopSampling)
		<-sampled
		g.mu.Lock()
		ended := g.active[r.tag.WorkspaceID] == r
		if ended {
			delete(g.active, r.tag.WorkspaceID)
			g.c.Metrics.UserConnected.WithLabelValues(labels...).Set(0)
			// No session, no latency: the series goes until the next session.
			g.c.Metrics.InSessionLatency.DeleteLabelValues(labels...)
		}
		g.mu.Unlock()
		if ended {
			g.sessionsChanged()
		}
		g.c.Metrics.SessionDisconnect.WithLabelValues(labels...).Inc()
		g.c.Log.Info("gateway: session ended", "client", r.from.String(), "workspace", r.tag.WorkspaceID, "session_id", r.tag.SessionID,
			"seconds", int(g.c.Now().Sub(start).Seconds()), "bytes_to_client", toClient, "bytes_from_client", toUp, "replaced", r.replaced)
	}()
	go func() {
		defer close(done)
		defer r.close()
		defer g.recoverConn(r.raw, "relay to the display")
		toUp, _ = io.Copy(r.up, r.client)
	}()
	var err error
	toClient, err = r.toClient()
	if err == nil {
		// The display ended the session (EOF): tell the client with a close_notify (a client
		// that has stopped reading holds this goroutine up to the 5 s TLS gives it, as
		// before, and nothing else).
		r.client.Close()
	}
}

// echo answers a TCP health probe: the bytes already read, then whatever else arrives, up
// to 64 KiB or 10 s.
func echo(conn net.Conn, first []byte) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(first); err != nil {
		return
	}
	io.Copy(conn, io.LimitReader(conn, 64<<10))
}
