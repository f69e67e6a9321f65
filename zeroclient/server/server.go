// Package server assembles zeroclient from the host config and runs it: the HTTPS broker,
// the streaming gateway, the health echo, the metrics listener and the root-only admin
// socket, until its context ends.
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

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

	// Addresses actually bound (useful with port 0).
	BrokerAddr, GatewayAddr, MetricsAddr string

	closers  []func()
	wg       sync.WaitGroup
	presence *presence.Reporter // nil when the WorkSpaces backend takes no reports
}

// Options override parts of the assembly (tests).
type Options struct {
	Workspaces workspaces.Backend // default: hostd over its socket
	Now        func() time.Time
}

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
	lock := &policy.Lockout{Failures: zc.Lockout.Failures, Window: zc.Lockout.Window.Duration, Duration: zc.Lockout.Duration.Duration,
		Store: s.creds, Now: opt.Now}
	if s.Auth, err = auth.New(auth.Config{Directories: c.Hostd.Directories, Creds: s.creds, Lockout: lock,
		Floor: zc.AuthFailureFloor.Duration, Now: opt.Now}); err != nil {
		return nil, err
	}
	s.closers = append(s.closers, s.Auth.Close)
	cert, err := certs.Load(zc.TLS.Cert, zc.TLS.Key, zc.TLS.SelfSignedDir, append(zc.TLS.Names, zc.Broker.Hostname, zc.Gateway.AdvertiseAddress))
	if err != nil {
		return nil, err
	}
	tlsCfg := certs.ServerConfig(cert)
	if s.events, err = events.Open(events.Config{Log: zc.Events.Log, AuditLog: zc.Events.AuditLog, Webhook: zc.Events.Webhook,
		WebhookTimeout: zc.Events.WebhookTimeout.Duration, Source: zc.Events.Source, Account: zc.Events.Account, Region: zc.Events.Region}, log); err != nil {
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
	ws := opt.Workspaces
	if ws == nil {
		ws = workspaces.Dial(zc.HostdSocket)
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
		SessionsChanged: func() { s.presence.Changed() }})
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

	// Listeners.
	bl, err := net.Listen("tcp", zc.Broker.Listen)
	if err != nil {
		return nil, fmt.Errorf("broker listen %s: %w", zc.Broker.Listen, err)
	}
	s.BrokerAddr = bl.Addr().String()
	srv := &http.Server{Handler: s.Broker.Handler(), TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 150 * time.Second, IdleTimeout: 120 * time.Second,
		// HTTP/1.1 only: the broker protocol's chunked responses are an HTTP/1.1 notion.
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
		s.goServe("echo udp "+addr, func() error { return echo.UDP(pc, 1000, log) })
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
	// Sweep expired tags and sessions.
	stop := make(chan struct{})
	s.closers = append(s.closers, func() { close(stop) })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(5 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				s.Tags.Sweep()
				sessions.Sweep()
			}
		}
	}()
	log.Info("zeroclient serving", "broker", s.BrokerAddr, "gateway", s.GatewayAddr, "echo", zc.Echo.Listen, "metrics", s.MetricsAddr,
		"admin", zc.AdminSocket, "directories", len(s.Auth.Directories()), "hostd", zc.HostdSocket)
	return s, nil
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

// InviteRequest is the admin socket's /invite body.
type InviteRequest struct {
	DirectoryID string `json:"directoryId"`
	UserName    string `json:"userName"`
}

// InviteResponse answers /invite.
type InviteResponse struct {
	ActivationCode string    `json:"activationCode"`
	ActivationURL  string    `json:"activationUrl"`
	Expires        time.Time `json:"expires"`
}

// serveAdmin serves operator commands on a root-only unix socket.
func (s *Server) serveAdmin(path string) error {
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return err
	}
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	read := func(w http.ResponseWriter, r *http.Request) (InviteRequest, bool) {
		var req InviteRequest
		if r.Method != http.MethodPost {
			reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST"})
			return req, false
		}
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.DirectoryID == "" || req.UserName == "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "want {\"directoryId\": ..., \"userName\": ...}"})
			return req, false
		}
		return req, true
	}
	mux.HandleFunc("/invite", func(w http.ResponseWriter, r *http.Request) {
		req, ok := read(w, r)
		if !ok {
			return
		}
		code, exp, err := s.Broker.Invite(req.DirectoryID, req.UserName, s.cfg.ActivationTTL.Duration)
		if err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		host := s.cfg.Broker.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		_, port, _ := net.SplitHostPort(s.BrokerAddr)
		if port != "443" {
			host = net.JoinHostPort(host, port)
		}
		s.log.Info("activation code issued", "directory", req.DirectoryID, "user", req.UserName, "expires", exp.Format(time.RFC3339))
		reply(w, http.StatusOK, InviteResponse{ActivationCode: code, ActivationURL: "https://" + host + "/activate?code=" + code, Expires: exp})
	})
	mux.HandleFunc("/unlock", func(w http.ResponseWriter, r *http.Request) {
		req, ok := read(w, r)
		if !ok {
			return
		}
		n, err := s.creds.ClearLockouts(req.DirectoryID + "/" + strings.ToLower(req.UserName) + "/")
		if err != nil {
			reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		s.log.Info("lockouts cleared", "directory", req.DirectoryID, "user", req.UserName, "records", n)
		reply(w, http.StatusOK, map[string]int{"cleared": n})
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	s.goServe("admin", func() error { return hs.Serve(l) })
	s.closers = append(s.closers, func() { hs.Close(); os.Remove(path) })
	return nil
}
