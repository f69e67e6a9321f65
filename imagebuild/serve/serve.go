// Package serve serves a PXE bundle over HTTP and TFTP for iPXE. Files are opened
// through an os.Root on the bundle directory, so no name (with "..", an absolute path or a
// symlink pointing outside) reaches anything outside it: pack.ag/tftp's own FileServer
// would follow "../". Every request is logged with what was sent.
package serve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"pack.ag/tftp"
)

// Server serves one directory.
type Server struct {
	root *os.Root
	dir  string
	log  *slog.Logger

	mu        sync.Mutex
	stats     map[string]int // file -> times sent
	transfers []Transfer
}

// Transfer is a file sent completely.
type Transfer struct {
	Path       string
	Proto      string // "http" or "tftp"
	Bytes      int64
	Start, End time.Time // request received, last byte handed to the kernel
}

// New opens dir for serving.
func New(dir string, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.Default()
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("serve: %s is not a directory", dir)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	return &Server{root: root, dir: dir, log: log, stats: map[string]int{}}, nil
}

// Close releases the directory.
func (s *Server) Close() error { return s.root.Close() }

// Transfers returns the files sent completely so far, in the order they completed.
func (s *Server) Transfers() []Transfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Transfer(nil), s.transfers...)
}

// Sent returns how many times each file was sent completely.
func (s *Server) Sent() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]int{}
	for k, v := range s.stats {
		out[k] = v
	}
	return out
}

func (s *Server) sent(t Transfer) {
	s.mu.Lock()
	s.stats[t.Path]++
	s.transfers = append(s.transfers, t)
	s.mu.Unlock()
}

// ErrOutside is a request for a name outside the directory.
var ErrOutside = errors.New("outside the served directory")

// open resolves a request path to a regular file inside the root.
func (s *Server) open(name string) (*os.File, fs.FileInfo, string, error) {
	clean := strings.TrimPrefix(name, "/")
	// Refuse rather than clean: a "../" request is a client bug or an attack.
	for _, part := range strings.Split(clean, "/") {
		if part == ".." {
			return nil, nil, clean, ErrOutside
		}
	}
	clean = path.Clean(clean)
	if clean == "." || clean == "" {
		return nil, nil, clean, fs.ErrNotExist
	}
	f, err := s.root.Open(clean)
	if err != nil {
		if strings.Contains(err.Error(), "escapes") || strings.Contains(err.Error(), "outside") {
			return nil, nil, clean, ErrOutside
		}
		return nil, nil, clean, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, clean, err
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, clean, fs.ErrNotExist
	}
	return f, st, clean, nil
}

// HTTP returns the HTTP handler: GET and HEAD of files in the directory.
func (s *Server) HTTP() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		// The raw path: net/http would clean "/../x" into "/x" before we see it.
		name := r.URL.EscapedPath()
		if un, err := pathUnescape(name); err == nil {
			name = un
		}
		f, st, clean, err := s.open(name)
		switch {
		case errors.Is(err, ErrOutside):
			s.log.Warn("refused", "proto", "http", "client", r.RemoteAddr, "path", name, "why", "outside the directory")
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		case err != nil:
			s.log.Info("not found", "proto", "http", "client", r.RemoteAddr, "path", name)
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		start := time.Now()
		// http.ServeContent sets Content-Length (iPXE sizes its buffer once instead of
		// growing it) and, for a whole file, hands the connection the *os.File, which
		// net/http sends with sendfile(2): no chunking, no copy through user space.
		w.Header().Set("Content-Type", "application/octet-stream")
		http.ServeContent(w, r, clean, st.ModTime(), f)
		end := time.Now()
		s.log.Info("sent", "proto", "http", "client", r.RemoteAddr, "path", clean, "bytes", st.Size(), "duration", end.Sub(start))
		if r.Method == http.MethodGet {
			s.sent(Transfer{Path: clean, Proto: "http", Bytes: st.Size(), Start: start, End: end})
		}
	})
}

func pathUnescape(p string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+2 < len(p) {
			var v byte
			if _, err := fmt.Sscanf(p[i+1:i+3], "%02x", &v); err != nil {
				return "", err
			}
			b.WriteByte(v)
			i += 2
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String(), nil
}

// ServeTFTP implements tftp.ReadHandler.
func (s *Server) ServeTFTP(r tftp.ReadRequest) {
	name := r.Name()
	f, st, clean, err := s.open(name)
	switch {
	case errors.Is(err, ErrOutside):
		s.log.Warn("refused", "proto", "tftp", "client", r.Addr().String(), "path", name, "why", "outside the directory")
		r.WriteError(tftp.ErrCodeAccessViolation, "outside the served directory")
		return
	case err != nil:
		s.log.Info("not found", "proto", "tftp", "client", r.Addr().String(), "path", name)
		r.WriteError(tftp.ErrCodeFileNotFound, "file not found")
		return
	}
	defer f.Close()
	r.WriteSize(st.Size())
	start := time.Now()
	n, err := io.Copy(r, f)
	if err != nil {
		s.log.Warn("send failed", "proto", "tftp", "client", r.Addr().String(), "path", clean, "bytes", n, "err", err)
		return
	}
	end := time.Now()
	s.log.Info("sent", "proto", "tftp", "client", r.Addr().String(), "path", clean, "bytes", n, "duration", end.Sub(start))
	s.sent(Transfer{Path: clean, Proto: "tftp", Bytes: n, Start: start, End: end})
}

// Listeners are what Run serves on.
type Listeners struct {
	HTTP net.Listener // nil: no HTTP
	TFTP *net.UDPConn // nil: no TFTP
}

// Listen opens the listeners for addresses like ":8080" and ":69" ("" skips one).
func Listen(httpAddr, tftpAddr string) (*Listeners, error) {
	var l Listeners
	if httpAddr != "" {
		ln, err := net.Listen("tcp", httpAddr)
		if err != nil {
			return nil, fmt.Errorf("serve: HTTP on %s: %w", httpAddr, err)
		}
		l.HTTP = ln
	}
	if tftpAddr != "" {
		a, err := net.ResolveUDPAddr("udp", tftpAddr)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("serve: TFTP address %s: %w", tftpAddr, err)
		}
		c, err := net.ListenUDP("udp", a)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("serve: TFTP on %s: %w", tftpAddr, err)
		}
		l.TFTP = c
	}
	return &l, nil
}

// Close closes the listeners.
func (l *Listeners) Close() {
	if l.HTTP != nil {
		l.HTTP.Close()
	}
	if l.TFTP != nil {
		l.TFTP.Close()
	}
}

// Run serves until ctx ends.
func (s *Server) Run(ctx context.Context, l *Listeners) error {
	errc := make(chan error, 2)
	n := 0
	var hs *http.Server
	if l.HTTP != nil {
		hs = &http.Server{Handler: s.HTTP(), ReadHeaderTimeout: 10 * time.Second}
		n++
		go func() { errc <- hs.Serve(l.HTTP) }()
	}
	var ts *tftp.Server
	if l.TFTP != nil {
		var err error
		ts, err = tftp.NewServer(l.TFTP.LocalAddr().String(), tftp.ServerSinglePort(false))
		if err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		ts.ReadHandler(s)
		n++
		go func() { errc <- ts.Serve(l.TFTP) }()
	}
	if n == 0 {
		return errors.New("serve: nothing to serve on")
	}
	select {
	case <-ctx.Done():
	case err := <-errc:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			l.Close()
			return fmt.Errorf("serve: %w", err)
		}
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = hs.Shutdown(sctx)
		cancel()
	}
	if ts != nil {
		_ = ts.Close()
	}
	l.Close()
	return nil
}
