package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/internal/hostconfig"
)

// ShutdownTimeout bounds a graceful shutdown: in-flight calls get this long to finish.
const ShutdownTimeout = 10 * time.Second

// TLSConfig is the HTTPS listener's TLS configuration: TLS 1.2 or later, and for TLS 1.2
// only ECDHE key exchange with AEAD ciphers (forward secrecy, guide §8.2 and §22.3); the
// TLS 1.3 suites all have both.
func TLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		MinVersion:   tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
	}
}

func (s *Server) httpServer() *http.Server {
	return &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       time.Minute,
		WriteTimeout:      time.Minute,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
}

// ServeHTTPS listens on addr (host:port) and serves the API over TLS until ctx is done,
// then shuts down gracefully. It returns nil after a shutdown.
func (s *Server) ServeHTTPS(ctx context.Context, addr string, cfg *tls.Config) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin api: %w", err)
	}
	return s.ServeTLSListener(ctx, ln, cfg)
}

// ServeTLSListener is ServeHTTPS on a listener the caller made (and that it closes).
func (s *Server) ServeTLSListener(ctx context.Context, ln net.Listener, cfg *tls.Config) error {
	if cfg == nil || (len(cfg.Certificates) == 0 && cfg.GetCertificate == nil) {
		ln.Close()
		return errors.New("admin api: HTTPS needs a TLS configuration with a certificate (see TLSConfig)")
	}
	srv := s.httpServer()
	srv.BaseContext = func(net.Listener) context.Context { return ctx } // long polls end with the server
	srv.TLSConfig = cfg.Clone()
	s.log.Info("admin api listening", "network", "tcp", "address", ln.Addr().String())
	return serve(ctx, srv, func() error { return srv.ServeTLS(ln, "", "") })
}

// ServeUnix creates the root-only socket at path (ListenUnix) and serves the API on it
// until ctx is done. Requests from a peer whose uid is 0 are accepted without SigV4 as
// principal "local"; other peers are refused.
func (s *Server) ServeUnix(ctx context.Context, path string) error {
	ln, err := ListenUnix(path)
	if err != nil {
		return err
	}
	return s.ServeUnixListener(ctx, ln)
}

// ServeUnixListener is ServeUnix on a listener from ListenUnix.
func (s *Server) ServeUnixListener(ctx context.Context, ln net.Listener) error {
	srv := s.httpServer()
	srv.BaseContext = func(net.Listener) context.Context { return ctx } // long polls end with the server
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		return context.WithValue(ctx, peerKey{}, peerCred(c))
	}
	s.log.Info("admin api listening", "network", "unix", "address", ln.Addr().String())
	return serve(ctx, srv, func() error { return srv.Serve(ln) })
}

func serve(ctx context.Context, srv *http.Server, run func() error) error {
	stopped := make(chan struct{})
	shutdownErr := make(chan error, 1)
	go func() {
		select {
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ShutdownTimeout)
			defer cancel()
			shutdownErr <- srv.Shutdown(sctx)
		case <-stopped:
			shutdownErr <- nil
		}
	}()
	err := run()
	if errors.Is(err, http.ErrServerClosed) {
		if err := <-shutdownErr; err != nil {
			srv.Close()
			return fmt.Errorf("admin api: shutdown: %w", err)
		}
		return nil
	}
	close(stopped)
	<-shutdownErr
	return fmt.Errorf("admin api: %w", err)
}

// ListenUnix makes the API's unix socket at path: its parent directory is created or
// narrowed to mode 0700 and the socket is 0600, both owned by the caller (root). A stale
// socket left by a crash is replaced; one with a live server behind it is an error.
func ListenUnix(path string) (net.Listener, error) { return ListenUnixGroup(path, -1) }

// ListenUnixGroup is ListenUnix with the broker group let in: the directory is 0710 and
// the socket 0660, both of group gid, so that the group's members can connect (what they
// may call is the API's to decide). gid -1 is ListenUnix.
func ListenUnixGroup(path string, gid int) (net.Listener, error) {
	dirMode, sockMode, group := os.FileMode(0o700), os.FileMode(0o600), os.Getegid()
	if gid >= 0 {
		dirMode, sockMode, group = 0o710, 0o660, gid
	}
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	switch dir {
	case "/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm":
		return nil, fmt.Errorf("admin api socket %s: put it in a directory of its own (e.g. /run/deskhost/), not %s, which must stay shared", path, dir)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	if st, ok := fi.Sys().(*unix.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("admin api socket directory %s belongs to uid %d, not to this process (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode()&os.ModeSticky != 0 {
		return nil, fmt.Errorf("admin api socket directory %s is sticky (a shared directory); use one of its own", dir)
	}
	if fi.Mode().Perm() != dirMode {
		if err := os.Chmod(dir, dirMode); err != nil {
			return nil, fmt.Errorf("admin api socket: %w", err)
		}
	}
	if err := os.Chown(dir, -1, group); err != nil {
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin api socket %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin api socket %s: another server is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin api socket: removing the stale socket: %w", err)
		}
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	if err := os.Chown(path, -1, group); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	if err := os.Chmod(path, sockMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin api socket: %w", err)
	}
	return ln, nil
}

type peerKey struct{}

// peer is the process at the other end of a unix-socket connection (SO_PEERCRED).
type peer struct {
	pid, uid, gid int
	err           error
}

func (p peer) String() string {
	if p.err != nil {
		return "unix:unknown-peer"
	}
	return fmt.Sprintf("unix:pid=%d,uid=%d", p.pid, p.uid)
}

func peerCred(c net.Conn) peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return peer{err: fmt.Errorf("not a unix connection (%T)", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return peer{err: err}
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return peer{err: err}
	}
	if cerr != nil {
		return peer{err: cerr}
	}
	return peer{pid: int(cred.Pid), uid: int(cred.Uid), gid: int(cred.Gid)}
}

// peerFrom returns the unix peer of the request's connection; ok is false for TCP.
func peerFrom(ctx context.Context) (peer, bool) {
	p, ok := ctx.Value(peerKey{}).(peer)
	return p, ok
}

// Run serves the API as the host config's api section says, until ctx is done: HTTPS on
// c.Listen (if set) with c.TLSCert and c.TLSKey, or with a self-signed certificate kept in
// certDir (LoadOrCreateCertificate), and the root-only unix socket c.Socket (if set). Both
// listeners are opened before Run serves on either, so a bad address or socket path is
// reported at once. Run returns when every listener has stopped; a listener failing stops
// the others. It returns nil after a graceful shutdown.
func (s *Server) Run(ctx context.Context, c hostconfig.API, certDir string) error {
	if c.Listen == "" && c.Socket == "" {
		return errors.New("admin api: neither listen nor socket is set")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var serves []func() error
	if c.Listen != "" {
		cert, certPath, err := LoadOrCreateCertificate(c.TLSCert, c.TLSKey, certDir, c.Listen)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", c.Listen)
		if err != nil {
			return fmt.Errorf("admin api: %w", err)
		}
		defer ln.Close()
		s.log.Info("admin api certificate", "file", certPath)
		serves = append(serves, func() error { return s.ServeTLSListener(ctx, ln, TLSConfig(cert)) })
	}
	if c.Socket != "" {
		ln, err := ListenUnixGroup(c.Socket, s.brokerGID)
		if err != nil {
			return err
		}
		defer ln.Close()
		serves = append(serves, func() error { return s.ServeUnixListener(ctx, ln) })
	}
	errs := make(chan error, len(serves))
	for _, serve := range serves {
		go func() {
			err := serve()
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	var all []error
	for range serves {
		if err := <-errs; err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}
