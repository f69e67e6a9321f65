// Package events tells people what happened: one "WorkSpaces Access" event per successful
// login, in the guide's exact JSON (catalog §21), appended to a JSON-lines file and, if
// configured, POSTed to a webhook; and an audit trail of failed logins and refusals in a
// second JSON-lines file (the guide: failures are not access events). Both files are
// rotated by size (to .1, .2, … up to a number kept), so they cannot fill /perm.
package events

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Access is a successful login.
type Access struct {
	ClientIP    string
	ProductName string // workspacesClientProductName
	Platform    string // clientPlatform
	DirectoryID string
	WorkspaceID string
	LoginTime   time.Time
}

// Envelope is the guide's event envelope.
type Envelope struct {
	Version    string       `json:"version"`
	ID         string       `json:"id"`
	DetailType string       `json:"detail-type"`
	Source     string       `json:"source"`
	Account    string       `json:"account"`
	Time       string       `json:"time"`
	Region     string       `json:"region"`
	Resources  []string     `json:"resources"`
	Detail     AccessDetail `json:"detail"`
}

// AccessDetail is the guide's detail object.
type AccessDetail struct {
	ClientIPAddress             string `json:"clientIpAddress"`
	ActionType                  string `json:"actionType"`
	WorkspacesClientProductName string `json:"workspacesClientProductName"`
	LoginTime                   string `json:"loginTime"`
	ClientPlatform              string `json:"clientPlatform"`
	DirectoryID                 string `json:"directoryId"`
	WorkspaceID                 string `json:"workspaceId"`
}

// Config is where events go.
type Config struct {
	Log, AuditLog           string
	Webhook                 string
	WebhookTimeout          time.Duration
	Source, Account, Region string
	// RotateSize is the size in bytes at which a log is rotated; Keep is how many rotated
	// files are kept. Defaults: 16 MiB, 4.
	RotateSize int64
	Keep       int
	// Owner, if set, is the user the process runs as once it has given up root: each log's
	// directory and file are handed to it, so that it can still rotate them then. The
	// directory must then be the logs' own (see handOver).
	Owner *Owner
}

// Owner is a uid and gid.
type Owner struct{ UID, GID int }

// Emitter writes events. Webhook deliveries run in the background from a bounded queue
// (a slow receiver must not slow logins); a full queue drops and logs.
type Emitter struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	acc   *logFile
	audit *logFile
	queue chan []byte
	wg    sync.WaitGroup
	now   func() time.Time
}

// Open opens the log files (creating them, 0600) and starts the webhook sender.
func Open(cfg Config, log *slog.Logger) (*Emitter, error) {
	if cfg.RotateSize <= 0 {
		cfg.RotateSize = 16 << 20
	}
	if cfg.Keep <= 0 {
		cfg.Keep = 4
	}
	e := &Emitter{cfg: cfg, log: log, now: time.Now}
	var names []string // what a logs' directory may hold before it is handed over
	for _, p := range []string{cfg.Log, cfg.AuditLog} {
		if p != "" {
			names = append(names, filepath.Base(p))
		}
	}
	var err error
	if e.acc, err = openLog(cfg.Log, cfg.RotateSize, cfg.Keep, cfg.Owner, names); err != nil {
		return nil, err
	}
	if e.audit, err = openLog(cfg.AuditLog, cfg.RotateSize, cfg.Keep, cfg.Owner, names); err != nil {
		e.acc.close()
		return nil, err
	}
	if cfg.Webhook != "" {
		e.queue = make(chan []byte, 256)
		e.wg.Add(1)
		go e.send()
	}
	return e, nil
}

// logFile is a JSON-lines file rotated by size: when a line would take it past max, it
// becomes path.1 (path.1 becomes path.2, …, path.keep is dropped) and a new one starts. A
// line is never split across files.
type logFile struct {
	path  string
	f     *os.File
	size  int64
	max   int64
	keep  int
	owner *Owner
}

func openLog(path string, max int64, keep int, owner *Owner, names []string) (*logFile, error) {
	if path == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	if owner != nil {
		if err := handOver(filepath.Dir(path), *owner, names); err != nil {
			return nil, err
		}
	}
	l := &logFile{path: path, max: max, keep: keep, owner: owner}
	if err := l.open(); err != nil {
		return nil, err
	}
	return l, nil
}

// handOver gives the logs' directory dir to owner (mode 0700): rotating renames files in
// it and creates new ones, which the process can only do as owner once it has dropped
// root. A directory owner does not have yet must hold nothing but the logs (names and
// their rotations): so that a shared directory, or one holding other secrets, is never
// handed over.
func handOver(dir string, owner Owner, names []string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok {
		return fmt.Errorf("events: log directory %s is not a directory", dir)
	}
	if fi.Mode()&os.ModeSticky != 0 {
		return fmt.Errorf("events: log directory %s is sticky (a shared directory); give the event logs a directory of their own", dir)
	}
	if int(st.Uid) != owner.UID {
		ents, err := os.ReadDir(dir)
		if err != nil {
			return fmt.Errorf("events: %w", err)
		}
		for _, e := range ents {
			if !isLogName(e.Name(), names) {
				return fmt.Errorf("events: log directory %s holds %s: the event logs need a directory of their own, which is handed to uid %d so that it can rotate them once zeroclient has dropped root", dir, e.Name(), owner.UID)
			}
		}
	}
	if err := os.Lchown(dir, owner.UID, owner.GID); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("events: %w", err)
	}
	return nil
}

// isLogName reports whether name is one of names or a rotation of one (name.N).
func isLogName(name string, names []string) bool {
	for _, n := range names {
		if name == n {
			return true
		}
		if rest, ok := strings.CutPrefix(name, n+"."); ok {
			if _, err := strconv.Atoi(rest); err == nil {
				return true
			}
		}
	}
	return false
}

func (l *logFile) open() error {
	flags := os.O_CREATE | os.O_WRONLY | os.O_APPEND
	if l.owner != nil {
		// The directory is owner's: root must not follow a link or block on a fifo there.
		flags |= syscall.O_NOFOLLOW | syscall.O_NONBLOCK
	}
	f, err := os.OpenFile(l.path, flags, 0o600)
	if err != nil {
		return fmt.Errorf("events: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("events: %w", err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("events: %s is not a regular file", l.path)
	}
	if l.owner != nil && os.Geteuid() == 0 {
		if err := f.Chown(l.owner.UID, l.owner.GID); err != nil {
			f.Close()
			return fmt.Errorf("events: %w", err)
		}
	}
	l.f, l.size = f, fi.Size()
	return nil
}

// write appends one line, rotating first if it would not fit.
func (l *logFile) write(line []byte) error {
	if l.f == nil {
		if err := l.open(); err != nil { // a rotation that failed to reopen: try again
			return err
		}
	}
	if l.size > 0 && l.size+int64(len(line)) > l.max {
		if err := l.rotate(); err != nil {
			return err
		}
	}
	n, err := l.f.Write(line)
	l.size += int64(n)
	return err
}

func (l *logFile) rotate() error {
	l.f.Close()
	l.f = nil
	os.Remove(fmt.Sprintf("%s.%d", l.path, l.keep))
	for i := l.keep - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", l.path, i), fmt.Sprintf("%s.%d", l.path, i+1))
	}
	if err := os.Rename(l.path, l.path+".1"); err != nil {
		return fmt.Errorf("events: rotate %s: %w", l.path, err)
	}
	return l.open()
}

func (l *logFile) close() {
	if l != nil && l.f != nil {
		l.f.Close()
	}
}

// LoginTimeFormat is the guide's loginTime: milliseconds, UTC ("2018-07-01T17:52:51.595Z").
const LoginTimeFormat = "2006-01-02T15:04:05.000Z"

// NewAccessEnvelope builds the guide's event for a login.
func (e *Emitter) NewAccessEnvelope(a Access) Envelope {
	var id [16]byte
	rand.Read(id[:])
	id[6] = id[6]&0x0f | 0x40
	id[8] = id[8]&0x3f | 0x80
	h := hex.EncodeToString(id[:])
	return Envelope{
		Version: "0", ID: h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:],
		DetailType: "WorkSpaces Access", Source: e.cfg.Source, Account: e.cfg.Account,
		Time: e.now().UTC().Format(time.RFC3339), Region: e.cfg.Region, Resources: []string{},
		Detail: AccessDetail{
			ClientIPAddress: a.ClientIP, ActionType: "successfulLogin", WorkspacesClientProductName: a.ProductName,
			LoginTime: a.LoginTime.UTC().Format(LoginTimeFormat), ClientPlatform: a.Platform,
			DirectoryID: a.DirectoryID, WorkspaceID: a.WorkspaceID,
		},
	}
}

// Access records a successful login.
func (e *Emitter) Access(a Access) error {
	b, err := json.Marshal(e.NewAccessEnvelope(a))
	if err != nil {
		return err
	}
	if err := e.write(e.acc, b); err != nil {
		return fmt.Errorf("events: access log: %w", err)
	}
	if e.queue != nil {
		select {
		case e.queue <- b:
		default:
			e.log.Warn("webhook queue full; event dropped", "webhook", e.cfg.Webhook, "workspace", a.WorkspaceID)
		}
	}
	return nil
}

// Audit records a failed login or a refusal.
func (e *Emitter) Audit(action, result, reason string, attrs map[string]string) {
	rec := map[string]string{"time": e.now().UTC().Format(LoginTimeFormat), "action": action, "result": result, "reason": reason}
	for k, v := range attrs {
		rec[k] = v
	}
	b, err := json.Marshal(rec)
	if err == nil {
		err = e.write(e.audit, b)
	}
	if err != nil {
		e.log.Error("audit log write failed", "err", err)
	}
}

func (e *Emitter) write(f *logFile, b []byte) error {
	if f == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return f.write(append(b, '\n'))
}

// send delivers queued events to the webhook, retrying each a few times.
func (e *Emitter) send() {
	defer e.wg.Done()
	client := &http.Client{Timeout: e.cfg.WebhookTimeout}
	for b := range e.queue {
		for attempt := 1; attempt <= 3; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), e.cfg.WebhookTimeout)
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.cfg.Webhook, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			cancel()
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode < 300 {
					break
				}
				err = fmt.Errorf("HTTP %s", resp.Status)
			}
			e.log.Warn("webhook delivery failed", "webhook", e.cfg.Webhook, "attempt", attempt, "err", err)
			time.Sleep(time.Duration(attempt) * 500 * time.Millisecond)
		}
	}
}

// Close flushes the webhook queue and closes the files.
func (e *Emitter) Close() error {
	if e.queue != nil {
		close(e.queue)
		e.wg.Wait()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.acc.close()
	e.audit.close()
	return nil
}
