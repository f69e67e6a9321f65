// Package events tells people what happened: one "WorkSpaces Access" event per successful
// login, in the guide's exact JSON (catalog §21), appended to a JSON-lines file and, if
// configured, POSTed to a webhook; and an audit trail of failed logins and refusals in a
// second JSON-lines file (the guide: failures are not access events).
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
	"sync"
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
}

// Emitter writes events. Webhook deliveries run in the background from a bounded queue
// (a slow receiver must not slow logins); a full queue drops and logs.
type Emitter struct {
	cfg   Config
	log   *slog.Logger
	mu    sync.Mutex
	acc   *os.File
	audit *os.File
	queue chan []byte
	wg    sync.WaitGroup
	now   func() time.Time
}

// Open opens the log files (creating them, 0600) and starts the webhook sender.
func Open(cfg Config, log *slog.Logger) (*Emitter, error) {
	e := &Emitter{cfg: cfg, log: log, now: time.Now}
	var err error
	if e.acc, err = openLog(cfg.Log); err != nil {
		return nil, err
	}
	if e.audit, err = openLog(cfg.AuditLog); err != nil {
		return nil, err
	}
	if cfg.Webhook != "" {
		e.queue = make(chan []byte, 256)
		e.wg.Add(1)
		go e.send()
	}
	return e, nil
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		return nil, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	return f, nil
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

func (e *Emitter) write(f *os.File, b []byte) error {
	if f == nil {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_, err := f.Write(append(b, '\n'))
	return err
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
	for _, f := range []*os.File{e.acc, e.audit} {
		if f != nil {
			f.Close()
		}
	}
	return nil
}
