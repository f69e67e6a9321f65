// Package radius is the MFA client: PAP Access-Requests carrying the user's passcode, and
// Access-Challenge handled as the guide's RADIUS servers use it (the server asks for more —
// a token code after a PIN — with a Reply-Message and a State the next request returns).
// Servers are tried in order, each with the guide's timeout (1–20 s) and retries (0–10).
// Every request carries a Message-Authenticator (RFC 3579), and every Access-Accept,
// Access-Reject and Access-Challenge must carry a valid one: that is the client's half of
// the BlastRADIUS fix (CVE-2024-3596), without which a man in the middle can forge an
// Access-Accept from a Reject by an MD5 collision on the Response Authenticator. A
// response without one is not an answer (the server counts as not answering, and the next
// is tried).
//
// Each server's UDP sockets are kept for the next request (a login sends two or three):
// one request at a time per socket, and an answer counts only if it carries the request's
// identifier and its Response Authenticator proves it answers this very request, so a late
// answer to an earlier one is ignored. A socket that timed out or failed is closed.
package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"deskhost/internal/catalog"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2869"
)

// Outcome is what the server decided.
type Outcome int

const (
	Reject Outcome = iota
	Accept
	Challenge
)

func (o Outcome) String() string {
	return [...]string{"reject", "accept", "challenge"}[o]
}

// Response is a server's answer.
type Response struct {
	Outcome Outcome
	// Message is the server's Reply-Message (the prompt of a challenge).
	Message string
	// State goes back to the server with the answer to a challenge.
	State []byte
}

// ErrUnreachable means no server answered.
var ErrUnreachable = errors.New("no RADIUS server answered")

// Client asks a directory's RADIUS servers.
type Client struct {
	servers []string
	secret  []byte
	timeout time.Duration
	retries int
	nasID   string

	mu   sync.Mutex
	idle map[string][]net.Conn // per server: connected sockets not in use
}

// maxIdle sockets are kept per server.
const maxIdle = 4

// NASIdentifier names this host in requests.
const NASIdentifier = "deskhost-zeroclient"

// New prepares a client from a directory's RADIUS settings (already validated).
func New(cfg *catalog.RADIUS) (*Client, error) {
	secret, err := cfg.Secret()
	if err != nil {
		return nil, fmt.Errorf("radius: %w", err)
	}
	c := &Client{secret: []byte(secret), timeout: time.Duration(cfg.Timeout()) * time.Second, retries: cfg.RetryCount(), nasID: NASIdentifier,
		idle: map[string][]net.Conn{}}
	for _, s := range cfg.Servers {
		c.servers = append(c.servers, net.JoinHostPort(s, strconv.Itoa(cfg.PortNumber())))
	}
	return c, nil
}

// Authenticate sends user's passcode (PAP), with state when answering a challenge.
func (c *Client) Authenticate(ctx context.Context, user, passcode string, state []byte) (Response, error) {
	var lastErr error
	for _, server := range c.servers {
		for attempt := 0; attempt <= c.retries; attempt++ {
			if err := ctx.Err(); err != nil {
				return Response{}, err
			}
			resp, err := c.exchange(ctx, server, user, passcode, state)
			if err == nil {
				return resp, nil
			}
			lastErr = fmt.Errorf("%s (attempt %d of %d): %w", server, attempt+1, c.retries+1, err)
		}
	}
	return Response{}, fmt.Errorf("%w: %v", ErrUnreachable, lastErr)
}

// exchange sends one fresh Access-Request (new identifier and authenticator: a retry is a
// new request, so a late answer to the old one cannot be mistaken for it) and waits up to
// the timeout.
func (c *Client) exchange(ctx context.Context, server, user, passcode string, state []byte) (Response, error) {
	p := radius.New(radius.CodeAccessRequest, c.secret)
	if err := rfc2865.UserName_SetString(p, user); err != nil {
		return Response{}, err
	}
	if err := rfc2865.UserPassword_SetString(p, passcode); err != nil {
		return Response{}, err
	}
	if err := rfc2865.NASIdentifier_SetString(p, c.nasID); err != nil {
		return Response{}, err
	}
	if state != nil {
		if err := rfc2865.State_Set(p, state); err != nil {
			return Response{}, err
		}
	}
	if err := signRequest(p); err != nil {
		return Response{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	return c.roundTrip(ctx, server, p)
}

// errUnrelated is a datagram that is not the answer to the request in flight.
var errUnrelated = errors.New("not an authentic answer to this request")

// answer reads datagram in as the answer to the request sent as wire. It is errUnrelated
// unless it parses, carries the request's identifier and a Response Authenticator that
// proves it answers that very request; then its Message-Authenticator must verify, and its
// code and attributes make the Response.
func answer(in, wire, secret []byte) (Response, error) {
	resp, err := radius.Parse(in, secret)
	if err != nil || len(in) < 2 || len(wire) < 20 || in[1] != wire[1] || !radius.IsAuthenticResponse(in, wire, secret) {
		return Response{}, errUnrelated
	}
	var reqAuth [16]byte
	copy(reqAuth[:], wire[4:20])
	if err := checkResponse(resp, reqAuth); err != nil {
		return Response{}, err
	}
	out := Response{Message: rfc2865.ReplyMessage_GetString(resp)}
	switch resp.Code {
	case radius.CodeAccessAccept:
		out.Outcome = Accept
	case radius.CodeAccessReject:
		out.Outcome = Reject
	case radius.CodeAccessChallenge:
		out.Outcome = Challenge
		out.State = rfc2865.State_Get(resp)
		if out.State == nil {
			return Response{}, errors.New("Access-Challenge without a State")
		}
	default:
		return Response{}, fmt.Errorf("unexpected RADIUS code %v", resp.Code)
	}
	return out, nil
}

// maxPacketErrors is how many unparsable or unrelated datagrams a request tolerates
// before giving up on the server.
const maxPacketErrors = 10

// roundTrip sends p to server on a kept socket and waits, until ctx ends, for the answer
// to it.
func (c *Client) roundTrip(ctx context.Context, server string, p *radius.Packet) (Response, error) {
	wire, err := p.Encode()
	if err != nil {
		return Response{}, err
	}
	conn, err := c.conn(ctx, server)
	if err != nil {
		return Response{}, err
	}
	ok := false
	defer func() {
		if ok {
			c.put(server, conn)
		} else {
			conn.Close()
		}
	}()
	if dl, has := ctx.Deadline(); has {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) }) // cancelled: stop waiting
	defer stop()
	if _, err := conn.Write(wire); err != nil {
		return Response{}, err
	}
	var buf [radius.MaxPacketLength]byte
	for errs := 0; ; {
		n, err := conn.Read(buf[:])
		if err != nil {
			if ctx.Err() != nil {
				return Response{}, ctx.Err()
			}
			return Response{}, err
		}
		resp, err := answer(buf[:n], wire, p.Secret)
		if errors.Is(err, errUnrelated) {
			if errs++; errs >= maxPacketErrors {
				return Response{}, errors.New("no authentic answer among the datagrams received")
			}
			continue
		}
		ok = stop() // the socket is reusable unless ctx ended meanwhile
		return resp, err
	}
}

func (c *Client) conn(ctx context.Context, server string) (net.Conn, error) {
	c.mu.Lock()
	if idle := c.idle[server]; len(idle) > 0 {
		conn := idle[len(idle)-1]
		c.idle[server] = idle[:len(idle)-1]
		c.mu.Unlock()
		return conn, nil
	}
	c.mu.Unlock()
	var d net.Dialer
	return d.DialContext(ctx, "udp", server)
}

// Close closes the kept sockets.
func (c *Client) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for server, idle := range c.idle {
		for _, conn := range idle {
			conn.Close()
		}
		delete(c.idle, server)
	}
}

func (c *Client) put(server string, conn net.Conn) {
	conn.SetDeadline(time.Time{})
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle[server]) >= maxIdle {
		conn.Close()
		return
	}
	c.idle[server] = append(c.idle[server], conn)
}

// signRequest adds the Message-Authenticator: HMAC-MD5 over the whole packet with the
// attribute zeroed (RFC 3579 §3.2).
func signRequest(p *radius.Packet) error {
	var zero [16]byte
	if err := rfc2869.MessageAuthenticator_Set(p, zero[:]); err != nil {
		return err
	}
	raw, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	mac := hmac.New(md5.New, p.Secret)
	mac.Write(raw)
	return rfc2869.MessageAuthenticator_Set(p, mac.Sum(nil))
}

// ErrNoMessageAuthenticator is a response that does not carry the Message-Authenticator
// this client requires (BlastRADIUS).
var ErrNoMessageAuthenticator = errors.New("RADIUS response has no Message-Authenticator (required against BlastRADIUS, CVE-2024-3596: have the server send it, e.g. FreeRADIUS 3.2.5+ or require_message_authenticator)")

// checkResponse verifies a response's Message-Authenticator, which must be there: computed
// with the request's authenticator in place of the response's.
func checkResponse(resp *radius.Packet, reqAuth [16]byte) error {
	got, err := rfc2869.MessageAuthenticator_Lookup(resp)
	if err != nil {
		return ErrNoMessageAuthenticator
	}
	if len(got) != 16 {
		return errors.New("response Message-Authenticator is not 16 bytes")
	}
	q := *resp
	q.Authenticator = reqAuth
	q.Attributes = append(radius.Attributes(nil), resp.Attributes...)
	var zero [16]byte
	if err := rfc2869.MessageAuthenticator_Set(&q, zero[:]); err != nil {
		return err
	}
	raw, err := q.MarshalBinary()
	if err != nil {
		return err
	}
	mac := hmac.New(md5.New, resp.Secret)
	mac.Write(raw)
	if !hmac.Equal(mac.Sum(nil), got) {
		return errors.New("response Message-Authenticator does not verify (wrong shared secret?)")
	}
	return nil
}
