package server

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/zeroclient/policy"
	"deskhost/zeroclient/tags"
)

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

// TagRequest is the admin socket's /tags body: a connect tag at this host's gateway for a
// user logged in at another host's broker, to be redeemed from client.
type TagRequest struct {
	DirectoryID string `json:"directoryId"`
	UserName    string `json:"userName"`
	WorkspaceID string `json:"workspaceId"`
	Client      string `json:"client"`
	SessionID   string `json:"sessionId"`
}

// TagResponse answers /tags.
type TagResponse struct {
	ConnectTag string    `json:"connectTag"`
	SessionID  string    `json:"sessionId"`
	Expires    time.Time `json:"expires"`
	Hostname   string    `json:"hostname"`
}

// umaskMu serialises the umask change of listenAdmin (the umask is the process's).
var umaskMu sync.Mutex

// listenAdmin makes the admin socket at path: in a directory of its own, created (or
// narrowed) to 0700 and owned by this process's user, and the socket created 0600 from
// the start (bound under umask 0177, never widened and then narrowed). A stale socket is
// replaced; one with a live server behind it is an error.
func listenAdmin(path string) (net.Listener, error) {
	path = filepath.Clean(path)
	dir := filepath.Dir(path)
	switch dir {
	case "/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm":
		return nil, fmt.Errorf("admin socket %s: put it in a directory of its own (e.g. /run/deskhost/zeroclient/), not %s, which must stay shared", path, dir)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("admin socket directory %s belongs to uid %d, not to this process (uid %d)", dir, st.Uid, os.Geteuid())
	}
	if fi.Mode()&os.ModeSticky != 0 {
		return nil, fmt.Errorf("admin socket directory %s is sticky (a shared directory); use one of its own", dir)
	}
	if fi.Mode().Perm() != 0o700 {
		if err := os.Chmod(dir, 0o700); err != nil {
			return nil, fmt.Errorf("admin socket: %w", err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("admin socket %s exists and is not a socket", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("admin socket %s: another zeroclient is listening on it", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("admin socket: removing the stale socket: %w", err)
		}
	}
	umaskMu.Lock()
	old := unix.Umask(0o177)
	l, err := net.Listen("unix", path)
	unix.Umask(old)
	umaskMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	return l, nil
}

type peerKey struct{}

// peerUID is the uid of the process at the other end of a unix connection (SO_PEERCRED),
// -1 if it cannot be told.
func peerUID(c net.Conn) int {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return -1
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return -1
	}
	uid := -1
	raw.Control(func(fd uintptr) {
		if cred, err := unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			uid = int(cred.Uid)
		}
	})
	return uid
}

// serveAdmin serves operator commands on the admin socket. Besides the socket's mode,
// each connection's peer is checked (SO_PEERCRED): only root and this process's own user
// get an answer.
func (s *Server) serveAdmin(path string) error {
	l, err := listenAdmin(path)
	if err != nil {
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
		n, err := s.creds.ClearLockouts(policy.UserPrefix(req.DirectoryID, req.UserName))
		if err != nil {
			reply(w, http.StatusInternalServerError, map[string]string{"error": err.Error()})
			return
		}
		s.log.Info("lockouts cleared", "directory", req.DirectoryID, "user", req.UserName, "records", n)
		reply(w, http.StatusOK, map[string]int{"cleared": n})
	})
	// A connect tag at this host's gateway for a user who logged in at another host's
	// broker (hostd's fleet port asks, for the peer's hostd, over mutual TLS): the tag is
	// redeemable here only, from the client's address.
	mux.HandleFunc("/tags", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			reply(w, http.StatusMethodNotAllowed, map[string]string{"error": "POST"})
			return
		}
		var req TagRequest
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&req); err != nil || req.DirectoryID == "" || req.UserName == "" || req.WorkspaceID == "" || req.SessionID == "" {
			reply(w, http.StatusBadRequest, map[string]string{"error": "want {\"directoryId\", \"userName\", \"workspaceId\", \"client\", \"sessionId\"}"})
			return
		}
		client, err := netip.ParseAddr(req.Client)
		if err != nil {
			reply(w, http.StatusBadRequest, map[string]string{"error": fmt.Sprintf("client %q: not an IP address", req.Client)})
			return
		}
		t, err := s.Tags.Issue(tags.Tag{SessionID: req.SessionID, DirectoryID: req.DirectoryID, UserName: req.UserName, WorkspaceID: req.WorkspaceID, Client: client})
		if err != nil {
			reply(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
			return
		}
		host := s.cfg.Broker.Hostname
		if host == "" {
			host, _ = os.Hostname()
		}
		s.log.Info("connect tag issued for another host's broker", "directory", req.DirectoryID, "user", req.UserName,
			"workspace", req.WorkspaceID, "session_id", t.SessionID, "expires", t.Expires.Format(time.RFC3339))
		reply(w, http.StatusOK, TagResponse{ConnectTag: t.Value, SessionID: t.SessionID, Expires: t.Expires, Hostname: host})
	})
	me := os.Geteuid()
	guard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if uid, _ := r.Context().Value(peerKey{}).(int); uid != 0 && uid != me {
			s.log.Warn("admin socket: refused a caller", "uid", uid)
			reply(w, http.StatusForbidden, map[string]string{"error": fmt.Sprintf("uid %d may not use zeroclient's admin socket", uid)})
			return
		}
		mux.ServeHTTP(w, r)
	})
	hs := &http.Server{Handler: guard, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, peerKey{}, peerUID(c))
		}}
	s.goServe("admin", func() error { return hs.Serve(l) })
	s.closers = append(s.closers, func() { hs.Close(); os.Remove(path) })
	return nil
}
