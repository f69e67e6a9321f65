package radius

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"layeh.com/radius"
	"layeh.com/radius/rfc2869"

	"deskhost/internal/catalog"
	"deskhost/zeroclient/internal/testsvc"
)

func cfg(r *testsvc.RADIUS, secret string, port, timeout, retries int) *catalog.RADIUS {
	to, re := catalog.RADIUSTimeout(timeout), catalog.RADIUSRetries(retries)
	return &catalog.RADIUS{Servers: catalog.ServerList{r.Host}, Port: catalog.Port(port), SharedSecret: secret,
		TimeoutSeconds: &to, Retries: &re}
}

func TestAgainstFreeRADIUS(t *testing.T) {
	r := testsvc.FreeRADIUS(t, testsvc.RADIUSConfig{
		Passcodes:  map[string]string{"alice": "123456"},
		Challenges: map[string]testsvc.Challenge{"carol": {PIN: "4321", Code: "246810"}},
	})
	c, err := New(cfg(r, r.Secret, r.Port, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(user, code string, state []byte, want Outcome) Response {
		t.Helper()
		resp, err := c.Authenticate(ctx, user, code, state)
		if err != nil {
			t.Fatalf("%s/%s: %v\n%s", user, code, err, r.Log())
		}
		if resp.Outcome != want {
			t.Fatalf("%s/%s: %s, want %s\n%s", user, code, resp.Outcome, want, r.Log())
		}
		return resp
	}
	check("alice", "123456", nil, Accept)
	check("alice", "654321", nil, Reject)
	check("nobody", "123456", nil, Reject)
	ch := check("carol", "4321", nil, Challenge)
	if ch.Message != testsvc.ChallengePrompt || len(ch.State) == 0 {
		t.Errorf("challenge: %+v", ch)
	}
	check("carol", "000000", ch.State, Reject)
	check("carol", "246810", ch.State, Accept)
	check("carol", "246810", nil, Reject) // the code alone, without the PIN step, is not enough

	// A wrong shared secret: FreeRADIUS drops the request (bad Message-Authenticator), so
	// it looks like no answer, and says so.
	wrong, _ := New(cfg(r, "not-the-secret", r.Port, 1, 0))
	if _, err := wrong.Authenticate(ctx, "alice", "123456", nil); !errors.Is(err, ErrUnreachable) {
		t.Errorf("wrong secret: %v", err)
	}
}

// TestTimeoutAndRetries: a server that never answers costs (retries+1) × timeout, then
// ErrUnreachable; the next server in the list is tried.
func TestTimeoutAndRetries(t *testing.T) {
	silent, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	got := make(chan int, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := silent.ReadFrom(buf); err != nil {
				return
			}
			got <- 1
		}
	}()
	to, re := catalog.RADIUSTimeout(1), catalog.RADIUSRetries(2)
	c, _ := New(&catalog.RADIUS{Servers: catalog.ServerList{"127.0.0.1"}, Port: catalog.Port(silent.LocalAddr().(*net.UDPAddr).Port),
		SharedSecret: "s", TimeoutSeconds: &to, Retries: &re})
	start := time.Now()
	_, err = c.Authenticate(context.Background(), "alice", "123456", nil)
	took := time.Since(start)
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "attempt 3 of 3") {
		t.Errorf("err = %v", err)
	}
	if took < 3*time.Second || took > 5*time.Second {
		t.Errorf("took %s, want about 3 × 1 s", took)
	}
	if n := len(got); n != 3 {
		t.Errorf("server saw %d requests, want 3 (1 + 2 retries)", n)
	}
}

// TestKeptSockets: requests to a server reuse one socket; a datagram that is not the answer
// to the request in flight (a stale answer to another request) is ignored, and the real
// answer is taken.
func TestKeptSockets(t *testing.T) {
	const secret = "s3cret"
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ports := map[string]bool{}
	var mu sync.Mutex
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := radius.Parse(buf[:n], []byte(secret))
			if err != nil {
				continue
			}
			mu.Lock()
			ports[from.String()] = true
			mu.Unlock()
			// First a stale answer: an Access-Accept for some other request.
			other := radius.New(radius.CodeAccessRequest, []byte(secret))
			other.Identifier = req.Identifier + 1
			if b, err := signed(other.Response(radius.CodeAccessAccept)); err == nil {
				pc.WriteTo(b, from)
			}
			other.Identifier = req.Identifier // same identifier, wrong authenticator
			if b, err := signed(other.Response(radius.CodeAccessAccept)); err == nil {
				pc.WriteTo(b, from)
			}
			// Then the real one: this request is rejected.
			if b, err := signed(req.Response(radius.CodeAccessReject)); err == nil {
				pc.WriteTo(b, from)
			}
		}
	}()
	to, re := catalog.RADIUSTimeout(2), catalog.RADIUSRetries(0)
	c, _ := New(&catalog.RADIUS{Servers: catalog.ServerList{"127.0.0.1"}, Port: catalog.Port(pc.LocalAddr().(*net.UDPAddr).Port),
		SharedSecret: secret, TimeoutSeconds: &to, Retries: &re})
	defer c.Close()
	for i := 0; i < 5; i++ {
		resp, err := c.Authenticate(context.Background(), "alice", "123456", nil)
		if err != nil || resp.Outcome != Reject {
			t.Fatalf("request %d: %+v %v (a stale Access-Accept was taken?)", i, resp, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ports) != 1 {
		t.Errorf("5 sequential requests came from %d sockets", len(ports))
	}
}

// signed encodes a response with its Message-Authenticator (RFC 3579 §3.2: HMAC-MD5 over
// the packet with the request's authenticator in place, the attribute zeroed), as a
// BlastRADIUS-fixed server sends it.
func signed(resp *radius.Packet) ([]byte, error) {
	var zero [16]byte
	if err := rfc2869.MessageAuthenticator_Set(resp, zero[:]); err != nil {
		return nil, err
	}
	raw, err := resp.MarshalBinary()
	if err != nil {
		return nil, err
	}
	mac := hmac.New(md5.New, resp.Secret)
	mac.Write(raw)
	if err := rfc2869.MessageAuthenticator_Set(resp, mac.Sum(nil)); err != nil {
		return nil, err
	}
	return resp.Encode()
}

// TestRequiresMessageAuthenticator: FreeRADIUS as Debian 12 ships it leaves the
// Message-Authenticator out of its answers; every one of them (Access-Accept,
// Access-Reject, Access-Challenge) is refused, so no login can pass on an answer a man in
// the middle could have forged (BlastRADIUS). The same server configured to send it is
// accepted (TestAgainstFreeRADIUS).
func TestRequiresMessageAuthenticator(t *testing.T) {
	r := testsvc.FreeRADIUS(t, testsvc.RADIUSConfig{
		Passcodes:                map[string]string{"alice": "123456"},
		Challenges:               map[string]testsvc.Challenge{"carol": {PIN: "4321", Code: "246810"}},
		OmitMessageAuthenticator: true,
	})
	c, err := New(cfg(r, r.Secret, r.Port, 1, 0))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, tc := range []struct{ what, user, code string }{
		{"Access-Accept", "alice", "123456"}, {"Access-Reject", "alice", "654321"}, {"Access-Challenge", "carol", "4321"},
	} {
		resp, err := c.Authenticate(context.Background(), tc.user, tc.code, nil)
		if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no Message-Authenticator") {
			t.Errorf("%s without Message-Authenticator: %+v %v\n%s", tc.what, resp, err, r.Log())
		}
	}
	if !strings.Contains(r.Log(), "Login OK: [alice]") {
		t.Errorf("FreeRADIUS did not accept alice (the refusal must be of an Accept):\n%s", r.Log())
	}
}

// TestForgedMessageAuthenticator: a response whose Message-Authenticator does not verify
// (another secret, or tampered with) is not an answer either.
func TestForgedMessageAuthenticator(t *testing.T) {
	const secret = "s3cret"
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := radius.Parse(buf[:n], []byte(secret))
			if err != nil {
				continue
			}
			resp := req.Response(radius.CodeAccessAccept)
			rfc2869.MessageAuthenticator_Set(resp, make([]byte, 16)) // present, but not the HMAC
			if b, err := resp.Encode(); err == nil {
				pc.WriteTo(b, from)
			}
		}
	}()
	to, re := catalog.RADIUSTimeout(1), catalog.RADIUSRetries(0)
	c, _ := New(&catalog.RADIUS{Servers: catalog.ServerList{"127.0.0.1"}, Port: catalog.Port(pc.LocalAddr().(*net.UDPAddr).Port),
		SharedSecret: secret, TimeoutSeconds: &to, Retries: &re})
	defer c.Close()
	if resp, err := c.Authenticate(context.Background(), "alice", "123456", nil); !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("forged Message-Authenticator: %+v %v", resp, err)
	}
}
