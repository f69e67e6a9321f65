// Package metadata is the instance metadata service every WorkSpace reaches at
// http://169.254.169.254/ over its management NIC (catalog §13.3: "TCP 80 →
// 169.254.169.254, EC2 metadata service"). It serves an EC2-compatible subset:
// instance identity, the management address and MAC, the hostname and
// user-data (e.g. the cloud-init seed a Linux bundle needs). The requester is
// identified by its source address, which netcfg's bridge rules tie to the
// WorkSpace's tap (no guest can claim another's address). IMDSv2 session
// tokens (PUT /latest/api/token) are supported and, with RequireToken,
// mandatory.
package metadata

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netns"

	"deskhost/internal/nsutil"
)

// Addr is where the service listens.
const Addr = "169.254.169.254:80"

// Instance is what one WorkSpace may learn about itself.
type Instance struct {
	WorkspaceID string
	DirectoryID string
	IP          netip.Addr // management address: identifies the requester
	MAC         string
	Hostname    string
	UserData    string
}

type token struct {
	ip      netip.Addr
	expires time.Time
}

// Server answers metadata requests.
type Server struct {
	// RequireToken refuses requests without an IMDSv2 token.
	RequireToken bool
	log          *slog.Logger
	now          func() time.Time

	mu     sync.Mutex
	byIP   map[netip.Addr]Instance
	tokens map[string]token
}

// New returns a server with no instances.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{log: log.With("component", "metadata"), now: time.Now, byIP: map[netip.Addr]Instance{}, tokens: map[string]token{}}
}

// SetInstances replaces the known instances.
func (s *Server) SetInstances(is []Instance) {
	m := make(map[netip.Addr]Instance, len(is))
	for _, i := range is {
		m[i.IP] = i
	}
	s.mu.Lock()
	s.byIP = m
	s.mu.Unlock()
}

// Listen opens the service's listener in ns.
func Listen(ns netns.NsHandle, addr string) (net.Listener, error) {
	l, err := nsutil.Listen(ns, "tcp4", addr)
	if err != nil {
		return nil, fmt.Errorf("metadata: listen %s: %w", addr, err)
	}
	return l, nil
}

// Serve serves HTTP on l until ctx ends.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(sctx)
	}()
	if err := hs.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metadata: %w", err)
	}
	return nil
}

const (
	tokenHeader    = "X-Aws-Ec2-Metadata-Token"
	tokenTTLHeader = "X-Aws-Ec2-Metadata-Token-Ttl-Seconds"
)

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		http.Error(w, "bad remote address", http.StatusBadRequest)
		return
	}
	src := ap.Addr().Unmap()
	s.mu.Lock()
	inst, known := s.byIP[src]
	now := s.now()
	for k, t := range s.tokens {
		if now.After(t.expires) {
			delete(s.tokens, k)
		}
	}
	s.mu.Unlock()
	if !known {
		http.Error(w, "not a WorkSpace known to this host", http.StatusNotFound)
		return
	}
	// Like EC2: requests that went through a proxy are refused.
	if r.Header.Get("X-Forwarded-For") != "" {
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	if r.URL.Path == "/latest/api/token" {
		s.issueToken(w, r, src, now)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if tok := r.Header.Get(tokenHeader); tok != "" || s.RequireToken {
		s.mu.Lock()
		t, ok := s.tokens[tok]
		s.mu.Unlock()
		if !ok || t.ip != src {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
	}
	body, ok := s.lookup(inst, r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	ct := "text/plain"
	if strings.HasPrefix(r.URL.Path, "/latest/dynamic/instance-identity/document") {
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Write([]byte(body))
}

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, src netip.Addr, now time.Time) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ttl, err := strconv.Atoi(r.Header.Get(tokenTTLHeader))
	if err != nil || ttl < 1 || ttl > 21600 {
		http.Error(w, "missing or invalid "+tokenTTLHeader+" (1-21600)", http.StatusBadRequest)
		return
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	s.mu.Lock()
	s.tokens[tok] = token{ip: src, expires: now.Add(time.Duration(ttl) * time.Second)}
	s.mu.Unlock()
	w.Header().Set(tokenTTLHeader, strconv.Itoa(ttl))
	w.Write([]byte(tok))
}

func (s *Server) lookup(i Instance, path string) (string, bool) {
	host := i.Hostname
	if host == "" {
		host = i.WorkspaceID
	}
	md := map[string]string{
		"instance-id":             i.WorkspaceID,
		"local-ipv4":              i.IP.String(),
		"mac":                     i.MAC,
		"hostname":                host,
		"local-hostname":          host,
		"workspaces/directory-id": i.DirectoryID,
		"workspaces/workspace-id": i.WorkspaceID,
	}
	switch path {
	case "/", "/latest", "/latest/":
		return "dynamic\nmeta-data\nuser-data\n", true
	case "/latest/meta-data", "/latest/meta-data/":
		return "hostname\ninstance-id\nlocal-hostname\nlocal-ipv4\nmac\nworkspaces/\n", true
	case "/latest/meta-data/workspaces", "/latest/meta-data/workspaces/":
		return "directory-id\nworkspace-id\n", true
	case "/latest/user-data":
		if i.UserData == "" {
			return "", false
		}
		return i.UserData, true
	case "/latest/dynamic/instance-identity/document":
		doc, _ := json.MarshalIndent(map[string]string{
			"instanceId": i.WorkspaceID, "privateIp": i.IP.String(), "directoryId": i.DirectoryID,
		}, "", "  ")
		return string(doc), true
	}
	if k, ok := strings.CutPrefix(path, "/latest/meta-data/"); ok {
		v, ok := md[strings.TrimSuffix(k, "/")]
		return v, ok && v != ""
	}
	return "", false
}
