package broker_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/internal/hostconfig"
	"deskhost/zeroclient/auth"
	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/client"
	"deskhost/zeroclient/server"
)

// from is a broker session from local address 127.0.0.n (another client address).
func (r *rig) from(n int) *client.Broker {
	b := r.broker()
	b.BindLocal(net.IPv4(127, 0, 0, byte(n)))
	return b
}

func (r *rig) authenticate(b *client.Broker, user, password, domain string) brokerxml.AuthenticateResp {
	r.t.Helper()
	var resp brokerxml.AuthenticateResp
	if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: user, Password: password, Domain: domain}, &resp); err != nil {
		r.t.Fatal(err)
	}
	return resp
}

func (r *rig) passcode(b *client.Broker, user, code string) brokerxml.AuthenticateResp {
	r.t.Helper()
	var resp brokerxml.AuthenticateResp
	if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: user, Passcode: code}, &resp); err != nil {
		r.t.Fatal(err)
	}
	return resp
}

// activateTOTP gives alice (TOTP directory) her password and returns her TOTP secret.
func (r *rig) activateTOTP(t *testing.T) string {
	code, _, err := r.srv.Broker.Invite("d-0000000001", "alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.broker().Activate(code, pw)
	if err != nil {
		t.Fatal(err)
	}
	return res.TOTPSecret
}

// TestMFAGuessesLockOut: "password right, passcode wrong", repeated from new addresses,
// gets 5 wrong codes and no more: then the user is locked out everywhere, with the right
// password and the right code. The right password never cleared the MFA failures.
func TestMFAGuessesLockOut(t *testing.T) {
	r := newRig(t)
	secret := r.activateTOTP(t)
	for i := 0; i < 5; i++ {
		b := r.from(20 + i)
		b.Hello(client.Identity)
		if resp := r.authenticate(b, "alice", pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthIncomplete {
			t.Fatalf("round %d, right password: %+v", i+1, resp.Result)
		}
		if resp := r.passcode(b, "alice", "000000"); resp.Result.ID != brokerxml.AuthFailedPasscode {
			t.Fatalf("round %d, wrong code: %+v", i+1, resp.Result)
		}
	}
	b := r.from(30)
	b.Hello(client.Identity)
	if resp := r.authenticate(b, "alice", pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthFailedLocked {
		t.Fatalf("after 5 wrong codes, the right password from a new address: %+v", resp.Result)
	}
	code, _ := auth.TOTPCode(secret, time.Now())
	if resp := r.passcode(b, "alice", code); resp.Result.ID == brokerxml.AuthComplete {
		t.Fatal("a code was checked while the user is locked out")
	}
	// The operator's unlock ends it.
	if n, err := r.creds.ClearLockouts("d-0000000001/alice/"); err != nil || n == 0 {
		t.Fatalf("unlock: %d %v", n, err)
	}
	b = r.from(31)
	b.Hello(client.Identity)
	if resp := r.authenticate(b, "alice", pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthIncomplete {
		t.Fatalf("after unlock: %+v", resp.Result)
	}
	if resp := r.passcode(b, "alice", code); resp.Result.ID != brokerxml.AuthComplete {
		t.Fatalf("after unlock, the right code: %+v", resp.Result)
	}
}

// TestParallelGuesses: guesses sent at once are all counted before any is checked: 20 at
// once from one address get 5 checked, and 40 at once from 40 addresses get the user's
// ceiling (20) checked; the rest are refused as locked.
func TestParallelGuesses(t *testing.T) {
	// Every guess waits for its password check however loaded the machine: none is busy.
	r := newRigConfig(t, server.Options{}, func(c *hostconfig.Config) {
		c.Zeroclient.PasswordChecks.Wait = hostconfig.Duration{Duration: time.Minute}
	})
	run := func(user string, n int, addr func(i int) int) map[string]int {
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				b := r.from(addr(i))
				b.Hello(client.Identity)
				resp := r.authenticate(b, user, "Wrong-Passw0rd", "corp.example.com")
				mu.Lock()
				got[resp.Result.ID]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		return got
	}
	one := run("bob", 20, func(int) int { return 40 })
	if one[brokerxml.AuthFailed] != 5 || one[brokerxml.AuthFailedLocked] != 15 {
		t.Errorf("20 parallel guesses from one address: %v, want 5 checked and 15 refused as locked", one)
	}
	many := run("carol", 40, func(i int) int { return 50 + i })
	if many[brokerxml.AuthFailed] != hostconfig.DefaultUserFailures || many[brokerxml.AuthFailedLocked] != 40-hostconfig.DefaultUserFailures {
		t.Errorf("40 parallel guesses from 40 addresses: %v, want %d checked", many, hostconfig.DefaultUserFailures)
	}
}

// TestAuditKeepsUnknownNamesOut: a typed name that is no user's (often a password typed
// in the wrong field) appears neither in the audit trail nor in the log; a user's does.
func TestAuditKeepsUnknownNamesOut(t *testing.T) {
	r := newRig(t)
	const typo = "Tr0ub4dor&3-secret"
	for _, user := range []string{typo, `OTHER\` + typo, "bob"} {
		b := r.broker()
		b.Hello(client.Identity)
		if resp := r.authenticate(b, user, "Wrong-Passw0rd", "corp.example.com"); resp.Result.ID != brokerxml.AuthFailed {
			t.Fatalf("%s: %+v", user, resp.Result)
		}
	}
	audit, err := os.ReadFile(filepath.Join(r.dir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(audit), "Tr0ub4dor") || strings.Contains(r.logs.String(), "Tr0ub4dor") {
		t.Errorf("an unknown typed name was recorded:\naudit: %s\nlog: %s", audit, r.logs.String())
	}
	if !strings.Contains(string(audit), `"userName":"bob"`) {
		t.Errorf("a known user's failure lacks the name: %s", audit)
	}
	if n := strings.Count(string(audit), "\n"); n != 3 {
		t.Errorf("%d audit records, want 3", n)
	}
}

// TestBusy: with more logins at once than password checks allowed, the excess is answered
// AUTH_FAILED_BROKER_BUSY (nothing checked, nothing counted) and the others as usual.
func TestBusy(t *testing.T) {
	r := newRigConfig(t, server.Options{}, func(c *hostconfig.Config) {
		c.Zeroclient.PasswordChecks = hostconfig.ZeroclientPasswordChecks{Concurrency: 1, Wait: hostconfig.Duration{Duration: time.Millisecond}}
	})
	var mu sync.Mutex
	got := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 12; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b := r.from(60 + i)
			b.Hello(client.Identity)
			resp := r.authenticate(b, "paul", pw, "plain.example.com")
			mu.Lock()
			got[resp.Result.ID]++
			if resp.Result.ID == brokerxml.AuthFailedBusy && resp.Result.Str != broker.MsgBusy {
				t.Errorf("busy message %q", resp.Result.Str)
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if got[brokerxml.AuthFailedBusy] == 0 || got[brokerxml.AuthComplete] == 0 || got[brokerxml.AuthComplete]+got[brokerxml.AuthFailedBusy] != 12 {
		t.Errorf("12 logins at once with one password check at a time: %v", got)
	}
	// Nothing busy counted as a failure: 12 more busy answers would have locked paul out.
	for i := 0; i < 12; i++ {
		b := r.from(60)
		b.Hello(client.Identity)
		r.authenticate(b, "nobody", "x-Wrong-Passw0rd", "plain.example.com")
	}
	b := r.from(61)
	b.Hello(client.Identity)
	if resp := r.authenticate(b, "paul", pw, "plain.example.com"); resp.Result.ID != brokerxml.AuthComplete {
		t.Errorf("paul after the busy answers: %+v", resp.Result)
	}
}

// TestSessionBoundToAddress: a session's cookie used from another address finds nothing.
func TestSessionBoundToAddress(t *testing.T) {
	r := newRig(t)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg}}
	hello, _ := brokerxml.Encode(&brokerxml.Hello{ClientInfo: client.Identity})
	resp := post(t, hc, r.base+"/pcoip-broker/xml", "application/xml", string(hello), nil)
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == broker.CookieName {
			cookie = c
		}
	}
	if cookie == nil {
		t.Fatal("no session cookie")
	}
	other := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 77)}}).DialContext}}
	body, _ := brokerxml.Encode(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: "paul", Password: pw, Domain: "plain.example.com"})
	resp = post(t, other, r.base+"/pcoip-broker/xml", "application/xml", string(body), cookie)
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var ar brokerxml.AuthenticateResp
	if err := brokerxml.DecodeResponse(out, &ar); err != nil || ar.Result.ID != brokerxml.AuthFailedNotAuthed {
		t.Errorf("the session's cookie from another address: %+v %v", ar.Result, err)
	}
	resp = post(t, hc, r.base+"/pcoip-broker/xml", "application/xml", string(body), cookie)
	out, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if err := brokerxml.DecodeResponse(out, &ar); err != nil || ar.Result.ID != brokerxml.AuthComplete {
		t.Errorf("the session's cookie from its own address: %+v %v", ar.Result, err)
	}
}

// TestHelloFloodKeepsMFAUsers: with the session store full of hellos from a flood, a user
// in the middle of MFA keeps the session and completes the login.
func TestHelloFloodKeepsMFAUsers(t *testing.T) {
	r := newRigConfig(t, server.Options{}, func(c *hostconfig.Config) { c.Zeroclient.Sessions.Max = 20 })
	secret := r.activateTOTP(t)
	b := r.from(90)
	b.Hello(client.Identity)
	if resp := r.authenticate(b, "alice", pw, "corp.example.com"); resp.Result.ID != brokerxml.AuthIncomplete {
		t.Fatal(resp.Result)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: r.tlsCfg}}
	hello, _ := brokerxml.Encode(&brokerxml.Hello{ClientInfo: client.Identity})
	for i := 0; i < 100; i++ {
		resp := post(t, hc, r.base+"/pcoip-broker/xml", "application/xml", string(hello), nil)
		resp.Body.Close()
	}
	code, _ := auth.TOTPCode(secret, time.Now())
	if resp := r.passcode(b, "alice", code); resp.Result.ID != brokerxml.AuthComplete {
		t.Errorf("the MFA step after a flood of 100 hellos: %+v", resp.Result)
	}
}

// rawExchange sends one broker request on a fresh TLS connection from 127.0.0.1 and
// returns the response exactly as it came off the wire (headers as written, chunked body
// undecoded).
func rawExchange(t *testing.T, r *rig, body string, headers ...string) string {
	t.Helper()
	c, err := tls.Dial("tcp", r.srv.BrokerAddr, r.tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "POST /pcoip-broker/xml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml; charset=UTF-8\r\n" +
		fmt.Sprintf("Content-Length: %d\r\nConnection: close\r\n", len(body))
	for _, h := range headers {
		req += h + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"+body); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	out, err := io.ReadAll(bufio.NewReader(c))
	if err != nil && len(out) == 0 {
		t.Fatal(err)
	}
	return string(out)
}

// cookieOf is the JSESSIONID value in a raw response's Set-Cookie header.
func cookieOf(raw string) string {
	i := strings.Index(raw, "\r\nSet-Cookie: "+broker.CookieName+"=")
	if i < 0 {
		return ""
	}
	v := raw[i+len("\r\nSet-Cookie: "+broker.CookieName+"="):]
	return v[:strings.IndexAny(v, ";\r")]
}

// TestRealClientWire: what real PCoIP clients need, read off the wire: hello-resp offers
// AUTHENTICATE_VIA_PASSWORD; responses are chunked; the cookie is set with a header
// written exactly "Set-Cookie"; a client that drops the cookie is found by its
// Client-Log-Id (from its own address only) and given the cookie again.
func TestRealClientWire(t *testing.T) {
	r := newRig(t)
	const logID = "a1ff3a80-8801-1038-a9bd-00505680aded"
	hello := `<?xml version="1.0"?><pcoip-client version="2.1"><hello><client-info><product-name>Teradici PCoIP Zero Client</product-name>` +
		`<product-version>6.0.0</product-version><platform>Tera2</platform><locale>en_US</locale><hostname>pcoip-portal</hostname>` +
		`</client-info></hello></pcoip-client>`
	raw := rawExchange(t, r, hello, "Client-Log-Id: "+logID)
	if !strings.HasPrefix(raw, "HTTP/1.1 200 OK\r\n") || !strings.Contains(raw, "\r\nTransfer-Encoding: chunked\r\n") {
		t.Errorf("hello-resp is not a chunked 200:\n%s", raw)
	}
	if !strings.Contains(raw, "<method>AUTHENTICATE_VIA_PASSWORD</method>") {
		t.Errorf("hello-resp does not offer AUTHENTICATE_VIA_PASSWORD:\n%s", raw)
	}
	first := cookieOf(raw)
	if first == "" {
		t.Fatalf("no header written exactly \"Set-Cookie: JSESSIONID=\":\n%s", raw)
	}
	// The client drops the cookie and sends its log id: the session is found, and the
	// cookie comes again.
	authn := `<pcoip-client version="2.1"><authenticate method="password"><username>paul</username><password>` + pw +
		`</password><domain>plain.example.com</domain></authenticate></pcoip-client>`
	raw = rawExchange(t, r, authn, "Client-Log-Id: "+logID)
	if !strings.Contains(raw, "AUTH_SUCCESSFUL_AND_COMPLETE") {
		t.Fatalf("authenticate by Client-Log-Id without the cookie:\n%s", raw)
	}
	if cookieOf(raw) != first || !strings.Contains(raw, "\r\nTransfer-Encoding: chunked\r\n") {
		t.Errorf("the session found by Client-Log-Id did not come with its cookie (chunked):\n%s", raw)
	}
	raw = rawExchange(t, r, `<pcoip-client version="2.1"><get-resource-list/></pcoip-client>`, "Client-Log-Id: "+logID)
	if !strings.Contains(raw, "LIST_SUCCESSFUL") || !strings.Contains(raw, "ws-paul000001") {
		t.Errorf("get-resource-list by Client-Log-Id:\n%s", raw)
	}
	// Without either, or with another client's log id, there is no session.
	raw = rawExchange(t, r, `<pcoip-client version="2.1"><get-resource-list/></pcoip-client>`, "Client-Log-Id: b2ff3a80-8801-1038-a9bd-00505680aded")
	if !strings.Contains(raw, brokerxml.ListNotAuthed) || cookieOf(raw) != "" {
		t.Errorf("another log id:\n%s", raw)
	}
	// From another address, the same log id finds nothing.
	c, err := (&tls.Dialer{NetDialer: &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 78)}}, Config: r.tlsCfg}).Dial("tcp", r.srv.BrokerAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := `<pcoip-client version="2.1"><get-resource-list/></pcoip-client>`
	fmt.Fprintf(c, "POST /pcoip-broker/xml HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\nContent-Length: %d\r\nConnection: close\r\nClient-Log-Id: %s\r\n\r\n%s", len(body), logID, body)
	out, _ := io.ReadAll(c)
	if !strings.Contains(string(out), brokerxml.ListNotAuthed) {
		t.Errorf("the log id from another address found the session:\n%s", out)
	}
}

// TestMethodNamesAccepted: a client that names the method as next-authentication does
// (method="AUTHENTICATE_VIA_PASSWORD") logs in as with method="password".
func TestMethodNamesAccepted(t *testing.T) {
	r := newRig(t)
	b := r.broker()
	b.Hello(client.Identity)
	var resp brokerxml.AuthenticateResp
	if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.AuthMethodPassword, Username: "paul", Password: pw, Domain: "plain.example.com"}, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.Result.ID != brokerxml.AuthComplete {
		t.Errorf("method=%s: %+v", brokerxml.AuthMethodPassword, resp.Result)
	}
}
