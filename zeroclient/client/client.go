// Package client is the reference zero client: it speaks the broker protocol over HTTPS
// (hello, authenticate with the MFA step, get-resource-list, allocate-resource, bye) and
// RFB with VeNCrypt to the gateway, and takes a frame of the desktop. `zeroclient connect`
// is this package with flags; the end-to-end tests and benchmarks use it too.
package client

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"deskhost/zeroclient/broker"
	"deskhost/zeroclient/brokerxml"
	"deskhost/zeroclient/rfb"
)

// Identity is what the reference client says it is in hello: a zero client (platform
// Tera2) with firmware 6.0.0, the level that connects directly.
var Identity = brokerxml.ClientInfo{
	ProductName: "deskhost reference zero client", ProductVersion: "6.0.0", Platform: "Tera2",
	Locale: "en_US", Hostname: "reference-client", SerialNumber: "00:00:00:00:00:00",
}

// TLSConfig trusts the PEM certificates in caFile (the broker's ca.pem).
func TLSConfig(caFile, serverName string) (*tls.Config, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}, nil
}

// Broker is a broker session.
type Broker struct {
	base string
	hc   *http.Client
	// LogID is sent as Client-Log-Id with every request, as PCoIP clients do.
	LogID string
	// methods are the authentication methods the last hello-resp offered.
	methods []string
}

// NewBroker prepares a session with the broker at base (https://host:port).
func NewBroker(base string, tlsCfg *tls.Config) (*Broker, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("broker %q: want https://host[:port]", base)
	}
	jar, _ := cookiejar.New(nil)
	var id [16]byte
	rand.Read(id[:])
	h := hex.EncodeToString(id[:])
	return &Broker{base: strings.TrimRight(base, "/"), LogID: h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:],
		hc: &http.Client{Jar: jar, Timeout: 150 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConnsPerHost: 4}}}, nil
}

// BindLocal makes the session's connections from local address ip (a client at another
// address: tests use 127.0.0.0/8's many addresses).
func (b *Broker) BindLocal(ip net.IP) {
	t := b.hc.Transport.(*http.Transport).Clone()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: 30 * time.Second}
	t.DialContext = d.DialContext
	b.hc.Transport = t
}

// DropCookies forgets the session cookie (as some PCoIP clients do): the broker then finds
// the session by Client-Log-Id.
func (b *Broker) DropCookies() {
	jar, _ := cookiejar.New(nil)
	b.hc.Jar = jar
}

// CloseIdle drops kept-alive connections (the next request makes a new TLS connection).
func (b *Broker) CloseIdle() { b.hc.CloseIdleConnections() }

// Do sends one message and decodes the response into resp.
func (b *Broker) Do(msg, resp any) error {
	body, err := brokerxml.Encode(msg)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPost, b.base+"/pcoip-broker/xml", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	req.Header.Set("Content-Type", "application/xml; charset=UTF-8")
	if b.LogID != "" {
		req.Header.Set("Client-Log-Id", b.LogID)
	}
	r, err := b.hc.Do(req)
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	defer r.Body.Close()
	out, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("broker: %w", err)
	}
	if r.StatusCode != http.StatusOK {
		return fmt.Errorf("broker: HTTP %s: %s", r.Status, strings.TrimSpace(string(out)))
	}
	return brokerxml.DecodeResponse(out, resp)
}

// Hello introduces the client.
func (b *Broker) Hello(ci brokerxml.ClientInfo) (*brokerxml.HelloResp, error) {
	var resp brokerxml.HelloResp
	if err := b.Do(&brokerxml.Hello{ClientInfo: ci}, &resp); err != nil {
		return &resp, err
	}
	b.methods = nil
	if resp.NextAuth != nil {
		b.methods = resp.NextAuth.Methods
	}
	return &resp, nil
}

func offers(na *brokerxml.NextAuth, method string) bool {
	return na != nil && slices.Contains(na.Methods, method)
}

// LoginError is a refused login with the broker's result.
type LoginError struct{ Result brokerxml.Result }

func (e *LoginError) Error() string { return e.Result.ID + ": " + e.Result.Str }

// Login authenticates with a password, then answers each passcode prompt with the next of
// passcodes (or, when passcode is set, with what it returns for the prompt).
//
// As a PCoIP client does, it logs in only with what the broker offers: the password when
// hello-resp offered AUTHENTICATE_VIA_PASSWORD, a passcode when the authenticate-resp
// offers AUTHENTICATE_VIA_PASSCODE.
func (b *Broker) Login(user, password, domain string, passcodes []string, passcode func(prompt string) (string, error)) error {
	if !slices.Contains(b.methods, brokerxml.AuthMethodPassword) {
		return fmt.Errorf("the broker's hello-resp does not offer %s (it offers %q)", brokerxml.AuthMethodPassword, b.methods)
	}
	var resp brokerxml.AuthenticateResp
	if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPassword, Username: user, Password: password, Domain: domain}, &resp); err != nil {
		return err
	}
	for round := 0; ; round++ {
		switch resp.Result.ID {
		case brokerxml.AuthComplete:
			return nil
		case brokerxml.AuthIncomplete:
			if !offers(resp.NextAuth, brokerxml.AuthMethodPasscode) {
				return fmt.Errorf("the broker wants more than a password but does not offer %s: %+v", brokerxml.AuthMethodPasscode, resp.NextAuth)
			}
		default:
			return &LoginError{resp.Result}
		}
		var code string
		switch {
		case round < len(passcodes):
			code = passcodes[round]
		case passcode != nil:
			var err error
			if code, err = passcode(resp.Result.Str); err != nil {
				return err
			}
		default:
			return fmt.Errorf("the broker asks for a passcode (%q) and none is left", resp.Result.Str)
		}
		resp = brokerxml.AuthenticateResp{}
		if err := b.Do(&brokerxml.Authenticate{Method: brokerxml.MethodPasscode, Username: user, Passcode: code}, &resp); err != nil {
			return err
		}
	}
}

// Resources lists the user's desktops.
func (b *Broker) Resources() ([]brokerxml.Resource, error) {
	var resp brokerxml.GetResourceListResp
	if err := b.Do(&brokerxml.GetResourceList{Protocols: []string{"PCOIP"}, ResourceTypes: []string{"DESKTOP"}}, &resp); err != nil {
		return nil, err
	}
	if resp.Result.ID != brokerxml.ListSuccessful {
		return nil, &LoginError{resp.Result}
	}
	return resp.Resources, nil
}

// Allocate asks for connect information for a desktop.
func (b *Broker) Allocate(id string) (*brokerxml.AllocateResourceResp, error) {
	var resp brokerxml.AllocateResourceResp
	if err := b.Do(&brokerxml.AllocateResource{ResourceID: id, Protocol: "PCOIP"}, &resp); err != nil {
		return nil, err
	}
	if resp.Result.ID != brokerxml.AllocSuccessful || resp.Target == nil {
		return &resp, &LoginError{resp.Result}
	}
	return &resp, nil
}

// Bye ends the session.
func (b *Broker) Bye() error {
	var resp brokerxml.ByeResp
	return b.Do(&brokerxml.Bye{}, &resp)
}

// Register looks a registration code up.
func (b *Broker) Register(code string) (*broker.Registration, error) {
	body, _ := json.Marshal(map[string]string{"registrationCode": code})
	r, err := b.hc.Post(b.base+"/registration", "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("registration: %w", err)
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(r.Body).Decode(&e)
		return nil, fmt.Errorf("registration: %s", e.Error)
	}
	var reg broker.Registration
	return &reg, json.NewDecoder(r.Body).Decode(&reg)
}

// Activate sets the first password with an activation code.
func (b *Broker) Activate(code, password string) (*broker.ActivationResult, error) {
	r, err := b.hc.PostForm(b.base+"/activate", url.Values{"code": {code}, "password": {password}})
	if err != nil {
		return nil, fmt.Errorf("activate: %w", err)
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		var e struct{ Error string }
		json.NewDecoder(r.Body).Decode(&e)
		return nil, fmt.Errorf("activate: HTTP %d: %s", r.StatusCode, e.Error)
	}
	var res broker.ActivationResult
	return &res, json.NewDecoder(r.Body).Decode(&res)
}

// Frame is what Stream got.
type Frame struct {
	Image   *image.RGBA
	Name    string
	Colours int
	Bytes   int
	Updates int
	Held    time.Duration // how long the stream was kept after the first frame (StreamHeld)
}

// Stream connects to the gateway at addr with the connect tag, using VeNCrypt sub-type
// (X509Plain sends the whole tag, X509Vnc answers VNC auth with it), and reads framebuffer
// updates until the frame shows more than one colour or timeout passes.
func Stream(addr string, tlsCfg *tls.Config, subtype uint32, user, tag string, timeout time.Duration) (*Frame, error) {
	return StreamHeld(addr, tlsCfg, subtype, user, tag, timeout, 0)
}

// holdAnswer is how long a held stream waits for the answer to each full-frame request.
const holdAnswer = 10 * time.Second

// StreamHeld is Stream that, once the frame is not blank, keeps the stream for hold more:
// a full-frame request each second, each answered within holdAnswer, or the stream is
// broken and it says so (a session that must survive something else going wrong).
func StreamHeld(addr string, tlsCfg *tls.Config, subtype uint32, user, tag string, timeout, hold time.Duration) (*Frame, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	tc, err := rfb.ClientVeNCrypt(conn, tlsCfg, subtype, user, tag)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	si, err := rfb.ClientInit(tc, true)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	img := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
	f := &Frame{Image: img, Name: si.Name}
	if err := rfb.RequestRawFrame(tc, si.Width, si.Height, false); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		n, err := rfb.ReadUpdate(tc, img)
		if err != nil {
			return f, fmt.Errorf("gateway: framebuffer update: %w", err)
		}
		f.Bytes += n
		f.Updates++
		if f.Colours = rfb.Colours(img, 3); f.Colours > 1 || time.Now().After(deadline) {
			if f.Colours > 1 && hold > 0 {
				return f, holdStream(tc, si.Width, si.Height, img, f, hold)
			}
			return f, nil
		}
		// Blank so far (the guest may still be drawing): ask again.
		time.Sleep(200 * time.Millisecond)
		if err := rfb.WriteUpdateRequest(tc, false, 0, 0, si.Width, si.Height); err != nil {
			return f, err
		}
	}
}

// holdStream asks for the whole frame each second for hold, and reads each answer.
func holdStream(c net.Conn, w, h uint16, img *image.RGBA, f *Frame, hold time.Duration) error {
	start := time.Now()
	for time.Since(start) < hold {
		time.Sleep(time.Second)
		c.SetDeadline(time.Now().Add(holdAnswer))
		if err := rfb.WriteUpdateRequest(c, false, 0, 0, w, h); err != nil {
			return fmt.Errorf("gateway: stream broken after %s held: %w", time.Since(start).Round(100*time.Millisecond), err)
		}
		n, err := rfb.ReadUpdate(c, img)
		if err != nil {
			return fmt.Errorf("gateway: stream broken after %s held: %w", time.Since(start).Round(100*time.Millisecond), err)
		}
		f.Bytes += n
		f.Updates++
		f.Held = time.Since(start)
	}
	return nil
}

// TargetAddr is the gateway address from an allocation.
func TargetAddr(t *brokerxml.Target) string {
	return net.JoinHostPort(t.IPAddress, strconv.Itoa(t.Port))
}

// ErrBlank is returned when the desktop's frame stayed one colour.
var ErrBlank = errors.New("the desktop frame is blank")

// SelfService asks the broker for a self-service action with this session's login. The
// result is returned with the HTTP status whatever it is; err is for transport failures
// and answers that are not the broker's JSON.
func (b *Broker) SelfService(q broker.SelfServiceRequest) (broker.SelfServiceResult, int, error) {
	var res broker.SelfServiceResult
	body, _ := json.Marshal(q)
	req, err := http.NewRequest(http.MethodPost, b.base+broker.SelfServicePath, bytes.NewReader(body))
	if err != nil {
		return res, 0, fmt.Errorf("broker: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	r, err := b.hc.Do(req)
	if err != nil {
		return res, 0, fmt.Errorf("broker: %w", err)
	}
	defer r.Body.Close()
	out, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return res, r.StatusCode, fmt.Errorf("broker: %w", err)
	}
	if err := json.Unmarshal(out, &res); err != nil {
		return res, r.StatusCode, fmt.Errorf("broker: HTTP %s: %s", r.Status, strings.TrimSpace(string(out)))
	}
	return res, r.StatusCode, nil
}
