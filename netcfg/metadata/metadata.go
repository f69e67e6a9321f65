// Package metadata is the instance metadata service every WorkSpace reaches at
// http://169.254.169.254/ over its management NIC (catalog §13.3: "TCP 80 →
// 169.254.169.254, EC2 metadata service"). It serves an EC2-compatible subset:
// instance identity, the management address and MAC, the hostname and
// user-data (e.g. the cloud-init seed a Linux bundle needs). The requester is
// identified by its source address, which netcfg's bridge rules tie to the
// WorkSpace's tap (no guest can claim another's address). IMDSv2 session
// tokens (PUT /latest/api/token) are supported and, with RequireToken,
// mandatory.
//
// Tokens live in hostd's process, so a guest must not be able to grow them
// without bound: each is bound to the WorkSpace and management address that
// asked for it, expires at its TTL, and each source holds at most MaxTokens
// (a new one beyond replaces its oldest). A lookup is one map access; the
// work of expiry is bounded per request (only the asking source's tokens)
// and Serve sweeps everything once a minute. A WorkSpace that leaves
// SetInstances, or whose address now belongs to another, loses its tokens.
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
	"slices"
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

// MaxTokensPerSource is the default cap on one source's live IMDSv2 tokens.
// A client usually holds one per process for the token's TTL (botocore asks
// again on a 401), so a few dozen cover a busy desktop.
const MaxTokensPerSource = 64

// MaxTokenTTL is the longest token lifetime a client may ask for (EC2's).
const MaxTokenTTL = 21600

type token struct {
	src     netip.Addr
	ws      string
	expires time.Time
}

// source is one requester's tokens, oldest first (at most MaxTokens).
type source struct {
	ws     string
	tokens []string
}

// Server answers metadata requests.
type Server struct {
	// RequireToken refuses requests without an IMDSv2 token.
	RequireToken bool
	// MaxTokens caps the live tokens of one source (New sets
	// MaxTokensPerSource).
	MaxTokens int
	log       *slog.Logger
	now       func() time.Time

	mu      sync.Mutex
	byIP    map[netip.Addr]Instance
	tokens  map[string]*token
	sources map[netip.Addr]*source
}

// New returns a server with no instances.
func New(log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	return &Server{log: log.With("component", "metadata"), now: time.Now, MaxTokens: MaxTokensPerSource,
		byIP: map[netip.Addr]Instance{}, tokens: map[string]*token{}, sources: map[netip.Addr]*source{}}
}

// SetInstances replaces the known instances. Tokens of a source that is no
// longer known, or that now belongs to another WorkSpace, are forgotten.
func (s *Server) SetInstances(is []Instance) {
	m := make(map[netip.Addr]Instance, len(is))
	for _, i := range is {
		m[i.IP] = i
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.byIP = m
	for ip, src := range s.sources {
		if i, ok := m[ip]; !ok || i.WorkspaceID != src.ws {
			s.dropSource(ip, src)
		}
	}
}

func (s *Server) dropSource(ip netip.Addr, src *source) {
	for _, k := range src.tokens {
		delete(s.tokens, k)
	}
	delete(s.sources, ip)
}

// expire forgets src's expired tokens (at most MaxTokens of them).
func (s *Server) expire(ip netip.Addr, src *source, now time.Time) {
	src.tokens = slices.DeleteFunc(src.tokens, func(k string) bool {
		if t := s.tokens[k]; t == nil || !now.Before(t.expires) {
			delete(s.tokens, k)
			return true
		}
		return false
	})
	if len(src.tokens) == 0 {
		delete(s.sources, ip)
	}
}

// Sweep forgets every expired token. Serve calls it once a minute; requests
// need not (a lookup checks expiry itself).
func (s *Server) Sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for ip, src := range s.sources {
		s.expire(ip, src, now)
	}
}

// valid reports whether tok is a live token of WorkSpace ws at ip.
func (s *Server) valid(tok string, ip netip.Addr, ws string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[tok]
	if t == nil {
		return false
	}
	if !now.Before(t.expires) {
		if src := s.sources[t.src]; src != nil {
			s.expire(t.src, src, now)
		}
		return false
	}
	return t.src == ip && t.ws == ws
}

// add records a new token for ws at ip, replacing the source's oldest when
// it holds MaxTokens already.
func (s *Server) add(tok string, ip netip.Addr, ws string, expires, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	src := s.sources[ip]
	if src != nil && src.ws != ws {
		s.dropSource(ip, src)
		src = nil
	}
	if src == nil {
		src = &source{ws: ws}
	}
	s.expire(ip, src, now)
	s.sources[ip] = src // expire removes an emptied source
	for len(src.tokens) >= max(s.MaxTokens, 1) {
		delete(s.tokens, src.tokens[0])
		src.tokens = slices.Delete(src.tokens, 0, 1)
	}
	src.tokens = append(src.tokens, tok)
	s.tokens[tok] = &token{src: ip, ws: ws, expires: expires}
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
	go func() {
		tick := time.NewTicker(time.Minute)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				s.Sweep()
			}
		}
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
		s.issueToken(w, r, src, inst.WorkspaceID, now)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if tok := r.Header.Get(tokenHeader); tok != "" || s.RequireToken {
		if !s.valid(tok, src, inst.WorkspaceID, now) {
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

func (s *Server) issueToken(w http.ResponseWriter, r *http.Request, src netip.Addr, ws string, now time.Time) {
	if r.Method != http.MethodPut {
		w.Header().Set("Allow", "PUT")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	ttl, ok := parseTTL(r.Header.Values(tokenTTLHeader))
	if !ok {
		http.Error(w, fmt.Sprintf("missing or invalid %s (one value, 1-%d)", tokenTTLHeader, MaxTokenTTL), http.StatusBadRequest)
		return
	}
	b := make([]byte, 32)
	rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	s.add(tok, src, ws, now.Add(time.Duration(ttl)*time.Second), now)
	w.Header().Set(tokenTTLHeader, strconv.Itoa(ttl))
	w.Write([]byte(tok))
}

// parseTTL reads the token TTL header: exactly one value of 1-5 decimal
// digits (no sign, no spaces) between 1 and MaxTokenTTL.
func parseTTL(vs []string) (int, bool) {
	if len(vs) != 1 || len(vs[0]) == 0 || len(vs[0]) > 5 {
		return 0, false
	}
	n := 0
	for _, c := range vs[0] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n >= 1 && n <= MaxTokenTTL
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
