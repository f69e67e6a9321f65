package gateway

import (
	"errors"
	"io"
	"net"
	"sync"
)

// The display-to-client direction carries nearly all the bytes (raw frames are hundreds of
// KiB), and every byte is encrypted for the client. What costs time there is not the AES-GCM
// itself but the path around it: a write syscall per 16 KiB TLS record, each waking the
// client, and a display that waits while its socket is full and the gateway is busy
// writing. The relay therefore
//   - reads the display in its own goroutine into a few large buffers, so the display keeps
//     going while the previous chunk is encrypted and sent (with a single P this costs
//     nothing measurable: the hand-off goes to the next goroutine to run);
//   - sends the records of a chunk in a few large writes (coalescer), starting each burst
//     (the first chunk after the display paused, typically the start of an update) with a
//     small write and doubling from there, so the client gets its first bytes quickly and
//     the rest in few writes.
//
// A chunk is sent as soon as it has been encrypted, never held back waiting for more, so a
// small update pays only the hand-off between the two goroutines (microseconds).
const (
	// chunkSize is the most read from the display at once. qemu's end of the socket holds
	// about 208 KiB, so one read usually empties it.
	chunkSize = 256 << 10
	// chunks is how many buffers circulate between the display reader and the client
	// writer.
	chunks = 3
	// firstFlush is the first write to the client in a burst; each further write in the
	// burst may be twice the size of the one before, up to maxFlush.
	firstFlush = 32 << 10
	maxFlush   = 1 << 20
)

// toClient relays the display to the client until one of them ends. err is nil when the
// display ended the session (EOF).
func (r *relay) toClient() (int64, error) {
	free := make(chan []byte, chunks)
	full := make(chan []byte, chunks)
	for i := 0; i < chunks; i++ {
		free <- make([]byte, chunkSize)
	}
	var readErr error
	go func() {
		defer close(full)
		for {
			b := <-free
			n, err := r.up.Read(b[:cap(b)]) // b comes back cut to what it carried
			if n > 0 {
				full <- b[:n]
			}
			if err != nil {
				readErr = err
				return
			}
		}
	}()
	var total int64
	var writeErr error
	for {
		var b []byte
		var ok bool
		select {
		case b, ok = <-full:
		default:
			// Nothing read yet: the display has paused, and what it sends next starts a
			// new burst.
			b, ok = <-full
			if r.co != nil {
				r.co.startBurst()
			}
		}
		if !ok {
			break // the reader has stopped; it touches nothing any more
		}
		if writeErr == nil {
			if writeErr = r.send(b); writeErr != nil {
				r.close() // stops the reader
			} else {
				total += int64(len(b))
			}
		}
		free <- b // never blocks: there are only as many buffers as free holds
	}
	if writeErr != nil {
		return total, writeErr
	}
	if errors.Is(readErr, io.EOF) {
		return total, nil
	}
	return total, readErr
}

// send encrypts b for the client and sends it in as few writes as the burst allows.
func (r *relay) send(b []byte) error {
	if r.co == nil {
		_, err := r.client.Write(b)
		return err
	}
	r.co.hold()
	_, err := r.client.Write(b)
	if ferr := r.co.release(); err == nil {
		err = ferr
	}
	return err
}

// coalescer is the client's TCP connection as its TLS layer sees it. Between hold and
// release (one chunk of the display), the records the TLS layer writes are gathered and
// sent together: when the gathered bytes reach the burst's current limit (which then
// doubles), and at release. Outside hold, writes go straight through, so the handshake,
// alerts and the reading goroutine's post-handshake replies are not delayed; they take
// the same lock, so records always reach the wire in the order the TLS layer wrote them.
type coalescer struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
	limit   int
}

func newCoalescer(c net.Conn) *coalescer { return &coalescer{Conn: c, limit: maxFlush} }

func (c *coalescer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		return c.Conn.Write(p)
	}
	c.buf = append(c.buf, p...)
	if len(c.buf) >= c.limit {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// startBurst makes the next write small again.
func (c *coalescer) startBurst() {
	c.mu.Lock()
	c.limit = firstFlush
	c.mu.Unlock()
}

func (c *coalescer) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// release sends what was gathered and lets writes through again.
func (c *coalescer) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	return c.flushLocked()
}

// flushLocked sends the gathered bytes; the burst's next write may be twice as big.
func (c *coalescer) flushLocked() error {
	if len(c.buf) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.buf)
	c.buf = c.buf[:0]
	c.limit = min(2*c.limit, maxFlush)
	return err
}
