// Package radius is the MFA client: PAP Access-Requests carrying the user's passcode, and
// Access-Challenge handled as the guide's RADIUS servers use it (the server asks for more —
// a token code after a PIN — with a Reply-Message and a State the next request returns).
// Servers are tried in order, each with the guide's timeout (1–20 s) and retries (0–10).
// Every request carries a Message-Authenticator (RFC 3579, and the BlastRADIUS fix), and a
// response's is checked when present.
package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2865"
	"layeh.com/radius/rfc2869"

	"deskhost/hostd/directory"
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
}

// NASIdentifier names this host in requests.
const NASIdentifier = "deskhost-zeroclient"

// New prepares a client from a directory's RADIUS settings (already validated).
func New(cfg *directory.RADIUS) (*Client, error) {
	secret, err := cfg.Secret()
	if err != nil {
		return nil, fmt.Errorf("radius: %w", err)
	}
	c := &Client{secret: []byte(secret), timeout: time.Duration(cfg.Timeout()) * time.Second, retries: cfg.RetryCount(), nasID: NASIdentifier}
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
	// Retry 0: this package retries itself, with a fresh packet each time.
	client := &radius.Client{Retry: 0, MaxPacketErrors: 10}
	resp, err := client.Exchange(ctx, p, server)
	if err != nil {
		return Response{}, err
	}
	if err := checkResponse(resp, p.Authenticator); err != nil {
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

// checkResponse verifies a response's Message-Authenticator when it has one: computed with
// the request's authenticator in place of the response's.
func checkResponse(resp *radius.Packet, reqAuth [16]byte) error {
	got, err := rfc2869.MessageAuthenticator_Lookup(resp)
	if err != nil {
		return nil // absent: the Response Authenticator (checked by Exchange) covers it
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
