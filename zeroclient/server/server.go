// Package server assembles zeroclient from the host config and runs it: the HTTPS broker,
// the streaming gateway, the health echo, the metrics listener and the root-only admin
// socket, until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sync"
	"time"

	"deskhost/internal/catalog"
	"deskhost/internal/certs"
	"deskhost/internal/hostconfig"
	"deskhost/internal/runpaths"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/credstore"
	"deskhost/zeroclient/echo"
	"deskhost/zeroclient/events"
	"deskhost/zeroclient/gateway"
	"deskhost/zeroclient/metrics"
	"deskhost/zeroclient/policy"
	"deskhost/zeroclient/presence"
	"deskhost/zeroclient/session"
	"deskhost/zeroclient/tags"
	"deskhost/zeroclient/web"
	"deskhost/zeroclient/workspaces"
)

// Server is a running zeroclient.
type Server struct {
	cfg     hostconfig.Zeroclient
	log     *slog.Logger
	creds   *credstore.Store
	events  *events.Emitter
	Broker  *broker.Broker
	Gateway *gateway.Gateway
	Metrics *metrics.Metrics
	Tags    *tags.Store
	Auth    *auth.Service
	Web     *web.Web

	// Addresses actually bound (useful with port 0).
	BrokerAddr, GatewayAddr, MetricsAddr string

	closers  []func()
	wg       sync.WaitGroup
	presence *presence.Reporter // nil when the WorkSpaces backend takes no reports
	conns    *connLimiter
}

// Options override parts of the assembly (tests).
type Options struct {
	Workspaces workspaces.Backend // default: hostd over its socket
	// Catalog is where the directories and IP access control groups come from; default:
	// hostd's DescribeCatalog over its socket (the Workspaces backend, if it offers it).
	Catalog CatalogSource
	Now     func() time.Time
	// RunAs is who the process becomes once New returns (zeroclient.user): the event logs
	// are handed to it so that it can rotate them.
	RunAs *events.Owner
}

// CatalogSource is hostd's catalog as zeroclient reads it: DescribeCatalog, a long poll on
// the catalog revision (workspaces.Client).
type CatalogSource interface {
	DescribeCatalog(ctx context.Context, since uint64, wait time.Duration) (workspaces.Catalog, error)
}

// StaticCatalog is a catalog that never changes (tests of the broker's own logic).
type StaticCatalog []catalog.Directory

func (c StaticCatalog) DescribeCatalog(ctx context.Context, since uint64, wait time.Duration) (workspaces.Catalog, error) {
	if since == 1 && wait > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	return workspaces.Catalog{Revision: 1, Directories: c}, nil
}

// FirstCatalogWait is how long New waits for hostd's catalog before serving without it
// (logins fail until it comes; it keeps being asked for).
const FirstCatalogWait = 15 * time.Second

// New builds and binds everything; Run serves.
func New(c *hostconfig.Config, log *slog.Logger, opt Options) (_ *Server, err error) {
	zc, err := c.Zeroclient.Resolved()
	if err != nil {
		return nil, err
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	s := &Server{cfg: zc, log: log}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	if s.creds, err = credstore.Open(zc.CredentialStore); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.creds.Close() })
	lock := &policy.Lockout{Failures: zc.Lockout.Failures, UserFailures: zc.Lockout.UserFailures, Window: zc.Lockout.Window.Duration,
		Duration: zc.Lockout.Duration.Duration, Store: s.creds, Now: opt.Now}
	if s.Auth, err = auth.New(auth.Config{Creds: s.creds, Lockout: lock, Floor: zc.AuthFailureFloor.Duration, Now: opt.Now,
		HashConcurrency: zc.PasswordChecks.Concurrency, HashWait: zc.PasswordChecks.Wait.Duration}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.Auth.Close() })
	ws := opt.Workspaces
	if ws == nil {
		ws = workspaces.Dial(zc.HostdSocket)
	}
	src := opt.Catalog
	if src == nil {
		var ok bool
		if src, ok = ws.(CatalogSource); !ok {
			return nil, errors.New("zeroclient: no catalog source: the WorkSpaces backend does not serve hostd's catalog")
		}
	}
	// The directories and IP access control groups are hostd's catalog records: read them
	// before serving, and follow every change (catalogFollower).
	first := s.loadCatalog(src)
	cert, err := certs.Load(zc.TLS.Cert, zc.TLS.Key, zc.TLS.SelfSignedDir, append(zc.TLS.Names, zc.Broker.Hostname, zc.Gateway.AdvertiseAddress))
	if err != nil {
		return nil, err
	}
	tlsCfg := certs.ServerConfig(cert)
	if s.events, err = events.Open(events.Config{Log: zc.Events.Log, AuditLog: zc.Events.AuditLog, Webhook: zc.Events.Webhook,
		WebhookTimeout: zc.Events.WebhookTimeout.Duration, Source: zc.Events.Source, Account: zc.Events.Account, Region: zc.Events.Region,
		RotateSize: int64(zc.Events.RotateMiB) << 20, Keep: zc.Events.Keep, Owner: opt.RunAs}, log); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, func() { s.events.Close() })
	s.Metrics = metrics.New()
	s.Tags = tags.NewStore(zc.Tags.TTL.Duration, opt.Now)
	s.Tags.OnEnd = func(t tags.Tag, why tags.EndReason) {
		// An allocation whose tag was never used is a failed connection.
		s.Metrics.ConnectionFailure.WithLabelValues(t.DirectoryID, t.WorkspaceID).Inc()
		log.Info("connect tag ended unused", "directory", t.DirectoryID, "user", t.UserName, "workspace", t.WorkspaceID,
			"session_id", t.SessionID, "reason", string(why))
	}
	hostname := zc.Broker.Hostname
	if hostname == "" {
		hostname, _ = os.Hostname()
	}
	// The gateway binds first: clients are told its real port.
	gl, err := net.Listen("tcp", zc.Gateway.Listen)
	if err != nil {
		return nil, fmt.Errorf("gateway listen %s: %w", zc.Gateway.Listen, err)
	}
	s.closers = append(s.closers, func() { gl.Close() })
	s.GatewayAddr = gl.Addr().String()
	gp := gl.Addr().(*net.TCPAddr).Port
	sessions := session.NewStore(session.Limits{IdleBeforeLogin: zc.Sessions.IdleBeforeLogin.Duration, IdleAfterLogin: zc.Sessions.IdleAfterLogin.Duration,
		Absolute: zc.Sessions.Absolute.Duration, Max: zc.Sessions.Max}, opt.Now)
	s.Broker = broker.New(broker.Config{Auth: s.Auth, Sessions: sessions, Tags: s.Tags, Workspaces: ws, Events: s.events, Metrics: s.Metrics,
		Creds: s.creds, Log: log, Hostname: hostname, GatewayPort: gp, AdvertiseIP: zc.Gateway.AdvertiseAddress,
		StartWait: zc.StartWait.Duration, Now: opt.Now})
	s.Gateway = gateway.New(gateway.Config{TLS: tlsCfg, Tags: s.Tags, Metrics: s.Metrics, Log: log, Now: opt.Now,
		HandshakeTimeout: zc.Gateway.HandshakeTimeout.Duration,
		Socket:           func(id string) string { return runpaths.VNCSocket(c.Hostd.DataDir, id) },
		Allowed: func(dirID string, a netip.Addr) bool {
			d := s.Auth.ByID(dirID)
			return d != nil && d.Login.IPAllowed(a)
		},
		WebAllowed: func(dirID string) bool {
			d := s.Auth.ByID(dirID)
			return d != nil && d.Login.DeviceAccess.Allowed(catalog.DeviceWeb)
		},
		// Sessions whose WorkSpace is relayed do not go idle; when the relay ends, the
		// directory's session resume timeout starts.
		SessionsChanged: func() { s.presence.Changed(); sessions.Streaming(s.Gateway.Connected()) }})
	// hostd learns the gateway's sessions (AutoStop, connection status). Its closer is
	// added before the gateway's, so it runs after: the last report follows the sessions'
	// end.
	if sender, ok := ws.(presence.Sender); ok {
		s.presence = presence.New(s.Gateway.Connected, sender, presence.Interval, log)
		pctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { s.presence.Run(pctx); close(done) }()
		s.closers = append(s.closers, func() { cancel(); <-done })
	}

	// Web Access shares the broker's listener, sessions, tags and rules, and streams
	// through the gateway.
	if s.Web, err = web.New(web.Config{Auth: s.Auth, Sessions: sessions, Tags: s.Tags, Workspaces: ws, Gateway: s.Gateway,
		Events: s.events, Metrics: s.Metrics, Log: log, Now: opt.Now}); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/", s.Broker.Handler())
	mux.Handle("/web", s.Web.Handler())
	mux.Handle(web.Prefix, s.Web.Handler())

	// Listeners.
	bl, err := net.Listen("tcp", zc.Broker.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker listen %s: %w", zc.Broker.Listen, err)
	}
	s.BrokerAddr = bl.Addr().String()
	s.conns = newConnLimiter(zc.Broker.MaxConnections, zc.Broker.MaxConnectionsPerAddress, log)
	bl = s.conns.listener(bl)
	srv := &http.Server{Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 150 * time.Second, IdleTimeout: 120 * time.Second, ConnState: s.conns.connState,
		// Web Access sessions measure their round trip on the connection (InSessionLatency).
		ConnContext: gateway.WithTransport,
		// HTTP/1.1 only: the broker protocol's chunked responses are an HTTP/1.1 notion (and
		// Web Access's WebSocket is an HTTP/1.1 upgrade).
		TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	s.goServe("broker", func() error { return srv.ServeTLS(bl, "", "") })
	s.closers = append(s.closers, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	s.goServe("gateway", func() error { return s.Gateway.Serve(gl) })
	s.closers = append(s.closers, func() { gl.Close(); s.Gateway.Close() })
	for _, addr := range zc.Echo.Listen {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("echo listen udp %s: %w", addr, err)
		}
		s.goServe("echo udp "+addr, func() error { return echo.UDP(pc, echo.DefaultLimits, log) })
		s.closers = append(s.closers, func() { pc.Close() })
		if sameAddr(addr, zc.Gateway.Listen) {
			continue // the gateway echoes TCP probes itself
		}
		tl, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("echo listen tcp %s: %w", addr, err)
		}
		s.goServe("echo tcp "+addr, func() error { return echo.TCP(tl) })
		s.closers = append(s.closers, func() { tl.Close() })
	}
	if zc.Metrics.Listen != "" {
		ml, err := net.Listen("tcp", zc.Metrics.Listen)
		if err != nil {
			return nil, fmt.Errorf("metrics listen %s: %w", zc.Metrics.Listen, err)
		}
		s.MetricsAddr = ml.Addr().String()
		mux := http.NewServeMux()
		mux.Handle("/metrics", s.Metrics.Handler())
		ms := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		s.goServe("metrics", func() error { return ms.Serve(ml) })
		s.closers = append(s.closers, func() { ms.Close() })
	}
	if zc.AdminSocket != "" {
		if err := s.serveAdmin(zc.AdminSocket); err != nil {
			return nil, err
		}
	}
	fctx, fcancel := context.WithCancel(context.Background())
	fdone := make(chan struct{})
	go func() { s.followCatalog(fctx, src, first); close(fdone) }()
	s.closers = append(s.closers, func() { fcancel(); <-fdone })
	// Sweep expired tags and sessions, and (less often) lockout records of no more use.
	stop := make(chan struct{})
	s.closers = append(s.closers, func() { close(stop) })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-t.C:
				s.Tags.Sweep()
				sessions.Sweep()
				if n%12 == 0 {
					if k, err := lock.Sweep(); err != nil {
						log.Warn("lockout sweep", "err", err)
					} else if k > 0 {
						log.Debug("lockout records swept", "records", k)
					}
				}
			}
		}
	}()
	log.Info("zeroclient serving", "broker", s.BrokerAddr, "gateway", s.GatewayAddr, "echo", zc.Echo.Listen, "metrics", s.MetricsAddr,
		"admin", zc.AdminSocket, "directories", len(s.Auth.Directories()), "hostd", zc.HostdSocket)
	return s, nil
}

// loadCatalog reads hostd's catalog for the first time, retrying for FirstCatalogWait,
// and returns its revision (0 if hostd did not answer: the follower keeps asking).
func (s *Server) loadCatalog(src CatalogSource) uint64 {
	deadline := time.Now().Add(FirstCatalogWait)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		c, err := src.DescribeCatalog(ctx, 0, 0)
		cancel()
		if err == nil {
			s.applyCatalog(c)
			return c.Revision
		}
		if time.Now().After(deadline) {
			s.log.Error("hostd's catalog is not available yet; logins fail until it is", "err", err)
			return 0
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// applyCatalog makes a catalog the one enforced: new logins use it at once, and live
// sessions from addresses it no longer allows are cut.
func (s *Server) applyCatalog(c workspaces.Catalog) {
	changed, err := s.Auth.Update(c.Directories)
	if err != nil {
		s.log.Error("catalog: some directories' login settings were refused", "revision", c.Revision, "err", err)
	}
	s.log.Info("catalog applied", "revision", c.Revision, "directories", len(s.Auth.Directories()))
	if changed && s.Gateway != nil {
		if n := s.Gateway.Recheck(); n > 0 {
			s.log.Info("catalog: sessions cut", "revision", c.Revision, "sessions", n)
		}
	}
}

// followCatalog long-polls hostd's catalog revision and applies each new revision, until
// ctx ends. A change reaches the broker and the gateway within one round trip.
func (s *Server) followCatalog(ctx context.Context, src CatalogSource, rev uint64) {
	for ctx.Err() == nil {
		c, err := src.DescribeCatalog(ctx, rev, workspaces.MaxCatalogWait)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Error("following hostd's catalog", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		if c.Revision != rev {
			s.applyCatalog(c)
			rev = c.Revision
		}
	}
}

func sameAddr(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	return pa == pb && ha == hb
}

func (s *Server) goServe(name string, fn func() error) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := fn(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			s.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

// Creds is the credential store (operator tools and tests set credentials through it).
func (s *Server) Creds() *credstore.Store { return s.creds }

// Run serves until ctx ends, then closes everything.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.log.Info("zeroclient stopping")
	s.close()
	return nil
}

func (s *Server) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
	s.wg.Wait()
}
