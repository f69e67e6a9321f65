package fleet

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
)

// The fleet port (Local.Listen, 7443 by default) serves, over TLS with this host's
// certificate:
//
//	POST /fleet/v1/join             a new host asking to join (no client certificate: it has none yet)
//	GET  /fleet/v1/images/SHA/FILE  a desktop image's file, by the image's content hash   (peers only)
//	POST /fleet/v1/tags             a connect tag from this host's gateway               (peers only)
//	GET  /fleet/v1/keystore/master  the fleet's key store master key                     (peers only)
//
// "Peers only" is mutual TLS: a client certificate the fleet CA signed, whose common name
// is a host in the store.

// TagRequest asks the owning host's connection manager for a connect tag.
type TagRequest struct {
	WorkspaceID, DirectoryID, UserName string
	Client                             netip.Addr
	SessionID                          string
}

// TagGrant is a connect tag issued by the owning host's gateway, and where that gateway is.
type TagGrant struct {
	ConnectTag string
	SessionID  string
	Expires    time.Time
	// Gateway is the owning host's gateway, host:port; Hostname its broker's name (the
	// TLS server name of its certificate).
	Gateway  string
	Hostname string
	HostID   string
}

// TagIssuer issues a connect tag at this host's gateway (zeroclient's admin socket).
type TagIssuer interface {
	IssueTag(ctx context.Context, r TagRequest) (TagGrant, error)
}

// Server is this host's fleet port.
type Server struct {
	Local      Local
	Membership Membership
	Store      store.Store
	Tags       TagIssuer
	// Images serves this host's desktop images to peers.
	Images *Images
	// Master is the fleet's key store master key, served to a peer that lacks it (nil:
	// not served).
	Master *keystore.Master
	Log    *slog.Logger
	Now    func() time.Time
}

// maxBody bounds a request body on the fleet port.
const maxBody = 64 << 10

// Run serves the fleet port until ctx ends.
func (s *Server) Run(ctx context.Context) error {
	if s.Now == nil {
		s.Now = time.Now
	}
	cert, pool, err := s.Local.TLS()
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /fleet/v1/join", s.join)
	mux.HandleFunc("POST /fleet/v1/tags", s.peer(s.tags))
	mux.HandleFunc("GET /fleet/v1/images/{digest}/{file}", s.peer(s.image))
	mux.HandleFunc("GET "+masterPath, s.peer(s.master))
	ln, err := net.Listen("tcp", s.Local.Listen)
	if err != nil {
		return fmt.Errorf("fleet port: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		BaseContext: func(net.Listener) context.Context { return ctx },
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert},
			ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool},
		ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug)}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	s.Log.Info("fleet port listening", "address", ln.Addr().String())
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("fleet port: %w", err)
	}
	return nil
}

// peer wraps a handler that only fleet hosts may call: mutual TLS under the fleet CA, and
// a common name that is a host in the store.
func (s *Server) peer(h func(w http.ResponseWriter, r *http.Request, from string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			httpError(w, http.StatusUnauthorized, "a client certificate from the fleet CA is required")
			return
		}
		from := r.TLS.VerifiedChains[0][0].Subject.CommonName
		err := s.Store.View(func(tx store.Tx) error { _, err := GetHost(tx, from); return err })
		if err != nil {
			httpError(w, http.StatusForbidden, fmt.Sprintf("%s is not a host of this fleet", from))
			return
		}
		h(w, r, from)
	}
}

type errorBody struct {
	Error string `json:"error"`
	Type  string `json:"type,omitempty"`
}

func httpError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// tagWire is a connect tag request between hosts.
type tagWire struct {
	WorkspaceID string `json:"workspaceId"`
	DirectoryID string `json:"directoryId"`
	UserName    string `json:"userName"`
	Client      string `json:"client"`
	SessionID   string `json:"sessionId"`
}

// tags issues a connect tag at this host's gateway for a WorkSpace this host owns, for a
// user who logged in at a peer's broker.
func (s *Server) tags(w http.ResponseWriter, r *http.Request, from string) {
	var in tagWire
	if err := json.NewDecoder(io.LimitReader(r.Body, maxBody)).Decode(&in); err != nil {
		httpError(w, http.StatusBadRequest, "bad request: "+err.Error())
		return
	}
	var ws workspace.Workspace
	err := s.Store.View(func(tx store.Tx) error {
		var err error
		ws, err = store.GetJSON[workspace.Workspace](tx, store.Workspaces, in.WorkspaceID)
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		httpError(w, http.StatusNotFound, "no WorkSpace "+in.WorkspaceID)
		return
	case err != nil:
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	case ws.Host != s.Membership.HostID:
		httpError(w, http.StatusConflict, fmt.Sprintf("WorkSpace %s is host %s's, not this host's", ws.ID, ws.Host))
		return
	case ws.DirectoryID != in.DirectoryID || !strings.EqualFold(ws.UserName, in.UserName):
		httpError(w, http.StatusForbidden, fmt.Sprintf("WorkSpace %s is not %s's", ws.ID, in.UserName))
		return
	case s.Tags == nil:
		httpError(w, http.StatusServiceUnavailable, "this host has no gateway")
		return
	}
	req := TagRequest{WorkspaceID: in.WorkspaceID, DirectoryID: in.DirectoryID, UserName: ws.UserName, SessionID: in.SessionID}
	if err := req.Client.UnmarshalText([]byte(in.Client)); err != nil {
		httpError(w, http.StatusBadRequest, "client address: "+err.Error())
		return
	}
	g, err := s.Tags.IssueTag(r.Context(), req)
	if err != nil {
		httpError(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	g.HostID = s.Membership.HostID
	if g.Gateway == "" {
		g.Gateway = s.Local.Addresses.Gateway
	}
	s.Log.Info("connect tag issued for a peer's broker", "workspace", ws.ID, "peer", from, "session_id", g.SessionID)
	writeJSON(w, http.StatusOK, g)
}

// Peers calls other hosts' fleet ports with this host's certificate.
type Peers struct {
	Store store.Store
	Self  string
	hc    *http.Client
}

// NewPeers is a caller of other hosts with this host's fleet identity.
func NewPeers(l Local, st store.Store, self string) (*Peers, error) {
	cert, pool, err := l.TLS()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}, RootCAs: pool},
		TLSHandshakeTimeout: 10 * time.Second, MaxIdleConnsPerHost: 4, IdleConnTimeout: time.Minute,
	}
	return &Peers{Store: st, Self: self, hc: &http.Client{Transport: tr}}, nil
}

// call makes a request of host id's fleet port; the server must present a certificate
// the fleet CA signed for that host.
func (p *Peers) do(ctx context.Context, id, method, path string, body any) (*http.Response, error) {
	var h Host
	if err := p.Store.View(func(tx store.Tx) error { var err error; h, err = GetHost(tx, id); return err }); err != nil {
		return nil, err
	}
	if h.Addresses.Fleet == "" {
		return nil, fmt.Errorf("host %s has no fleet address", id)
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(mustJSON(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+h.Addresses.Fleet+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("host %s (%s): %w", id, h.Addresses.Fleet, err)
	}
	if cn := resp.TLS.PeerCertificates[0].Subject.CommonName; cn != id {
		resp.Body.Close()
		return nil, fmt.Errorf("host %s's fleet address %s answered as %s", id, h.Addresses.Fleet, cn)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		var e errorBody
		json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&e)
		return nil, fmt.Errorf("host %s: %s (HTTP %d)", id, e.Error, resp.StatusCode)
	}
	return resp, nil
}

// IssueConnectTag asks the owning host's gateway for a connect tag (service.Tagger).
func (p *Peers) IssueConnectTag(ctx context.Context, owner string, r TagRequest) (TagGrant, error) {
	if owner == p.Self {
		return TagGrant{}, catalog.Errorf(catalog.InvalidParameterValues, "WorkSpace %s is this host's: its gateway issues its tags itself", r.WorkspaceID)
	}
	resp, err := p.do(ctx, owner, http.MethodPost, "/fleet/v1/tags", tagWire{WorkspaceID: r.WorkspaceID, DirectoryID: r.DirectoryID,
		UserName: r.UserName, Client: r.Client.String(), SessionID: r.SessionID})
	if err != nil {
		return TagGrant{}, catalog.Errorf(catalog.ResourceUnavailable, "%v", err)
	}
	defer resp.Body.Close()
	var g TagGrant
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&g); err != nil {
		return g, fmt.Errorf("host %s's connect tag: %w", owner, err)
	}
	return g, nil
}

// caOf finds the CA a TLS server's chain ends in: the last certificate, self-signed, that
// signed the one before it.
func caOf(chain []*x509.Certificate) (*x509.Certificate, error) {
	if len(chain) < 2 {
		return nil, errors.New("the server sent no CA with its certificate (not a deskhost fleet port?)")
	}
	ca := chain[len(chain)-1]
	if !ca.IsCA || ca.CheckSignatureFrom(ca) != nil {
		return nil, errors.New("the last certificate the server sent is not a self-signed CA")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return nil, fmt.Errorf("the server's certificate is not signed by the CA it sent: %w", err)
	}
	return ca, nil
}

// serverOnce guards one-time work per key (image fetches).
type onceMap struct {
	mu sync.Mutex
	m  map[string]*onceCall
}

type onceCall struct {
	done chan struct{}
	err  error
}

func (o *onceMap) do(key string, fn func() error) error {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[string]*onceCall{}
	}
	if c, ok := o.m[key]; ok {
		o.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &onceCall{done: make(chan struct{})}
	o.m[key] = c
	o.mu.Unlock()
	c.err = fn()
	close(c.done)
	o.mu.Lock()
	delete(o.m, key)
	o.mu.Unlock()
	return c.err
}
