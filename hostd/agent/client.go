package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Error is an ok:false answer from the agent.
type Error struct {
	Op  string
	Msg string
}

func (e *Error) Error() string { return fmt.Sprintf("agent %s: %s", e.Op, e.Msg) }

// Client talks to one guest agent over the unix socket qemu (libvirt) listens on. It is
// safe for use by several goroutines, but calls are serialised: one request at a time.
type Client struct {
	mu      sync.Mutex
	conn    net.Conn
	br      *bufio.Reader
	pending []byte // part of a line read before a timeout
	nextID  uint64
	closed  bool

	// StatusAttempt bounds each attempt of Status; Status retries until its context ends.
	// Zero means 2 s.
	StatusAttempt time.Duration
}

// Dial connects to the agent channel's unix socket. When ctx has a deadline, Dial keeps
// retrying (every 100 ms) while the socket does not exist yet or refuses connections, so
// it can be called right after the domain is started.
func Dial(ctx context.Context, socketPath string) (*Client, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", socketPath)
		if err == nil {
			return &Client{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), nextID: uint64(time.Now().UnixNano() & 0xffffffff)}, nil
		}
		if _, ok := ctx.Deadline(); !ok || ctx.Err() != nil {
			return nil, fmt.Errorf("agent: dial %s: %w", socketPath, err)
		}
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("agent: dial %s: %w (last error: %v)", socketPath, ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Close closes the connection. The agent survives it and serves the next connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.conn.Close()
}

// Call sends one request (its ID is assigned here) and waits for the response with the
// same id, discarding stale responses to earlier, timed-out requests. An ok:false answer
// is returned as *Error along with the response.
func (c *Client) Call(ctx context.Context, req Request) (Response, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return Response{}, errors.New("agent: client closed")
	}
	if err := ctx.Err(); err != nil {
		return Response{}, err
	}
	c.nextID++
	req.ID = c.nextID
	line, err := Encode(req)
	if err != nil {
		return Response{}, err
	}

	// Deadlines: the context's deadline, and an immediate one if it is cancelled.
	dl, _ := ctx.Deadline()
	if err := c.conn.SetDeadline(dl); err != nil {
		return Response{}, err
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = c.conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	defer func() {
		if !stop() {
			<-fired // it ran (or is running): let it finish before clearing the deadline
		}
		_ = c.conn.SetDeadline(time.Time{})
	}()
	wrap := func(err error) error {
		if ctx.Err() != nil {
			return fmt.Errorf("agent %s: %w", req.Op, ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return fmt.Errorf("agent %s: %w", req.Op, context.DeadlineExceeded)
		}
		return fmt.Errorf("agent %s: %w", req.Op, err)
	}

	if _, err := c.conn.Write(line); err != nil {
		return Response{}, wrap(err)
	}
	for {
		l, err := c.readLine()
		if err != nil {
			return Response{}, wrap(err)
		}
		var resp Response
		if err := json.Unmarshal(l, &resp); err != nil {
			continue // garbage (e.g. the tail of a line cut by a reconnect): skip it
		}
		if resp.ID != req.ID {
			continue // the late answer to an earlier request that timed out
		}
		if !resp.OK {
			msg := resp.Error
			if msg == "" {
				msg = "failed without a message"
			}
			return resp, &Error{Op: req.Op, Msg: msg}
		}
		return resp, nil
	}
}

// readLine returns the next complete line, keeping a partial line across timeouts.
func (c *Client) readLine() ([]byte, error) {
	for {
		frag, err := c.br.ReadSlice('\n')
		if err == nil {
			var l []byte
			if len(c.pending) > 0 {
				l = append(c.pending, frag...)
				c.pending = nil
			} else {
				l = append([]byte(nil), frag...)
			}
			return l, nil
		}
		c.pending = append(c.pending, frag...)
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(c.pending) > MaxLineBytes {
				c.pending = nil
				return nil, fmt.Errorf("response line longer than %d bytes", MaxLineBytes)
			}
			continue
		}
		return nil, err
	}
}

// Status asks for the guest's status. The agent may not have opened its port yet (or be
// booting): each attempt is bounded by StatusAttempt and Status retries until ctx ends.
// It is the way to wait for an agent to come up.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	attempt := c.StatusAttempt
	if attempt <= 0 {
		attempt = 2 * time.Second
	}
	for {
		actx, cancel := context.WithTimeout(ctx, attempt)
		resp, err := c.Call(actx, Request{Op: OpStatus})
		cancel()
		if err == nil {
			if resp.Status == nil {
				return nil, errors.New("agent status: answer without status fields")
			}
			return resp.Status, nil
		}
		var ae *Error
		if errors.As(err, &ae) || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("agent status: %w (last error: %v)", ctx.Err(), err)
			}
			return nil, err
		}
	}
}

// FillMemory makes the guest allocate percent% of its MemAvailable, fill it with marker
// repeated, and keep it resident until the guest dies. It returns the bytes filled.
func (c *Client) FillMemory(ctx context.Context, marker string, percent int) (uint64, error) {
	req := Request{Op: OpFillMemory, Marker: marker, Percent: percent}
	if err := req.Validate(); err != nil {
		return 0, err
	}
	resp, err := c.Call(ctx, req)
	if err != nil {
		return 0, err
	}
	return resp.BytesFilled, nil
}

// WriteFile writes data to path (below /sysroot/ or /home/) in the guest and fsyncs it.
func (c *Client) WriteFile(ctx context.Context, path string, data []byte) error {
	req := Request{Op: OpWriteFile, Path: path, Data: string(data)}
	if err := req.Validate(); err != nil {
		return err
	}
	_, err := c.Call(ctx, req)
	return err
}

// ReadFile reads path (below /sysroot/ or /home/) in the guest.
func (c *Client) ReadFile(ctx context.Context, path string) ([]byte, error) {
	req := Request{Op: OpReadFile, Path: path}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	resp, err := c.Call(ctx, req)
	if err != nil {
		return nil, err
	}
	return []byte(resp.Data), nil
}

// Shutdown asks the guest to sync, unmount its volumes and power off (or reboot). The
// agent answers before it starts; the domain then stops (or reboots) on its own.
func (c *Client) Shutdown(ctx context.Context, reboot bool) error {
	_, err := c.Call(ctx, Request{Op: OpShutdown, Reboot: reboot})
	return err
}

// Crash makes the guest kernel panic (sysrq 'c'), after answering. With pvpanic in the
// domain, libvirt's on_crash action follows.
func (c *Client) Crash(ctx context.Context) error {
	_, err := c.Call(ctx, Request{Op: OpCrash})
	return err
}

// Clipboard returns the text of the guest's clipboard (what a VNC client last cut, or what
// SetClipboard set).
func (c *Client) Clipboard(ctx context.Context) (string, error) {
	resp, err := c.Call(ctx, Request{Op: OpClipboardGet})
	if err != nil {
		return "", err
	}
	return resp.Data, nil
}

// SetClipboard makes text the guest clipboard's and offers it to the VNC clients.
func (c *Client) SetClipboard(ctx context.Context, text string) error {
	req := Request{Op: OpClipboardSet, Data: text}
	if err := req.Validate(); err != nil {
		return err
	}
	_, err := c.Call(ctx, req)
	return err
}

// Freeze syncs and freezes the guest's volume filesystems; it returns them. The guest
// thaws them itself after MaxFreeze if Thaw never comes.
func (c *Client) Freeze(ctx context.Context) ([]string, error) {
	resp, err := c.Call(ctx, Request{Op: OpFreeze})
	return resp.Filesystems, err
}

// Thaw thaws what Freeze froze.
func (c *Client) Thaw(ctx context.Context) ([]string, error) {
	resp, err := c.Call(ctx, Request{Op: OpThaw})
	return resp.Filesystems, err
}

// Silence stops the agent answering for d (whole seconds, at least one), the guest still
// running: the agent answers this request, then closes its port until d has passed.
func (c *Client) Silence(ctx context.Context, d time.Duration) error {
	_, err := c.Call(ctx, Request{Op: OpSilence, Seconds: int((d + time.Second - 1) / time.Second)})
	return err
}

// Sanitize runs the guide's image sanitising steps in the guest (OpSanitize). It answers
// the root volume's use even when the guest refused (too full).
func (c *Client) Sanitize(ctx context.Context) (usedPercent float64, changed []string, err error) {
	resp, err := c.Call(ctx, Request{Op: OpSanitize})
	return resp.RootUsedPercent, resp.Sanitized, err
}

// GrowFS grows volume's (VolumeRoot or VolumeUser) filesystem online to fill its disk,
// once the guest sees the disk at minBytes or more; it returns the filesystem's and the
// disk's sizes in bytes.
func (c *Client) GrowFS(ctx context.Context, volume string, minBytes uint64) (fsBytes, diskBytes uint64, err error) {
	req := Request{Op: OpGrowFS, Volume: volume, MinBytes: minBytes}
	if err := req.Validate(); err != nil {
		return 0, 0, err
	}
	resp, err := c.Call(ctx, req)
	return resp.FSBytes, resp.DiskBytes, err
}

// ReadChunk reads up to length bytes of path from offset; it answers them and the file's
// size (fewer bytes than asked, or none, at its end).
func (c *Client) ReadChunk(ctx context.Context, path string, offset int64, length int) ([]byte, int64, error) {
	req := Request{Op: OpReadChunk, Path: path, Offset: offset, Length: length}
	if err := req.Validate(); err != nil {
		return nil, 0, err
	}
	resp, err := c.Call(ctx, req)
	return resp.Chunk, resp.FileBytes, err
}

// Adopt asks the agent (PID 1, an imported image's root mounted) to make that root boot on
// its own with the agent as a systemd service; see OpAdopt.
func (c *Client) Adopt(ctx context.Context) (*Adoption, error) {
	resp, err := c.Call(ctx, Request{Op: OpAdopt})
	if err != nil {
		return nil, err
	}
	if resp.Adoption == nil {
		return nil, errors.New("agent: adopt answered without an adoption")
	}
	return resp.Adoption, nil
}
