package gateway

import (
	"context"
	"crypto/tls"
	"image"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"deskhost/zeroclient/rfb"
	"deskhost/zeroclient/tags"
)

// webRig serves ServeWeb behind a real TLS WebSocket server, as Web Access does: the
// handler redeems the tag in the URL for the client's address, then hands the WebSocket
// to the gateway.
func webRig(t testing.TB, r *rig) string {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		ap, _ := netip.ParseAddrPort(req.RemoteAddr)
		tag, err := r.tags.RedeemPlain(req.URL.Query().Get("tag"), ap.Addr())
		if err != nil {
			http.Error(w, ReasonBadTag, http.StatusForbidden)
			return
		}
		c, err := websocket.Accept(w, req, nil)
		if err != nil {
			return
		}
		c.SetReadLimit(1 << 20)
		nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
		r.g.ServeWeb(nc, Transport(req.Context()), func() { c.CloseNow() }, tag, ap.Addr())
	}))
	srv.Config.ConnContext = WithTransport // as zeroclient's broker server does
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return "wss" + strings.TrimPrefix(srv.URL, "https")
}

func dialWeb(t testing.TB, url, tag string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	c, _, err := websocket.Dial(ctx, url+"/?tag="+tag, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(4 << 20)
	return websocket.NetConn(context.Background(), c, websocket.MessageBinary), nil
}

// TestServeWeb: a WebSocket client authorized by its tag gets security type None, the
// display's ServerInit named for the WorkSpace, and frames through the relay; its session
// is one of the gateway's (Connected, takeover); the IP groups apply.
func TestServeWeb(t *testing.T) {
	d := newDisplay(t, 320, 200)
	r := newRig(t, d)
	url := webRig(t, r)
	tag := r.issue(t)
	c, err := dialWeb(t, url, tag.Value)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := rfb.ClientNone(c); err != nil {
		t.Fatalf("RFB over the WebSocket: %v", err)
	}
	si, err := rfb.ClientInit(c, true)
	if err != nil || si.Width != 320 || si.Height != 200 || si.Name != tag.WorkspaceID {
		t.Fatalf("ServerInit %+v, %v", si, err)
	}
	img := image.NewRGBA(image.Rect(0, 0, 320, 200))
	rfb.RequestRawFrame(c, 320, 200, false)
	if n, err := rfb.ReadUpdate(c, img); err != nil || n == 0 {
		t.Fatalf("frame through the WebSocket relay: %d bytes, %v", n, err)
	}
	<-r.change
	if got := r.g.Connected(); len(got) != 1 || got[0] != tag.WorkspaceID {
		t.Errorf("Connected() = %v", got)
	}
	// The tag was used: a replay is refused before any WebSocket exists.
	if _, err := dialWeb(t, url, tag.Value); err == nil {
		t.Error("a used tag opened a second WebSocket")
	}
	// A zero client taking the desktop over ends the web session at once.
	tc, _, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(make([]byte, 64<<10)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the web session was not ended by the takeover")
			}
			break
		}
	}
	// The directory's IP groups no longer allow the address: refused with the reason.
	r.allow = false
	c2, err := dialWeb(t, url, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	err = rfb.ClientNone(c2)
	if refused, ok := err.(*rfb.RefusedError); !ok || refused.Reason != ReasonNotAllowed {
		t.Errorf("a web session from an address the IP groups refuse: %v", err)
	}
}

// BenchmarkWebSocketRelay: raw frames from the synthetic display through the gateway,
// over a TLS WebSocket (Web Access) against over RFB+VeNCrypt TLS (zero clients),
// alternated so both see the same load.
func BenchmarkWebSocketRelay(b *testing.B) {
	d := newDisplay(b, 720, 400)
	r := newRig(b, d)
	url := webRig(b, r)
	// The WebSocket's session is for another WorkSpace than the VeNCrypt one: a second
	// session for the same WorkSpace would take the first over.
	other, err := r.tags.Issue(tags.Tag{DirectoryID: "d-0123456789", UserName: "bob", WorkspaceID: "ws-0000000b0b", Client: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		b.Fatal(err)
	}
	ws, err := dialWeb(b, url, other.Value)
	if err != nil {
		b.Fatal(err)
	}
	defer ws.Close()
	if err := rfb.ClientNone(ws); err != nil {
		b.Fatal(err)
	}
	wsi, err := rfb.ClientInit(ws, true)
	if err != nil {
		b.Fatal(err)
	}
	tc, tsi, err := r.connect(b, rfb.VeNCryptX509Plain, r.issue(b).Value)
	if err != nil {
		b.Fatal(err)
	}
	defer tc.Close()
	frames := func(c net.Conn, si rfb.ServerInit, n int) float64 {
		img := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
		start, total := time.Now(), 0
		for i := 0; i < n; i++ {
			rfb.WriteUpdateRequest(c, false, 0, 0, si.Width, si.Height)
			k, err := rfb.ReadUpdate(c, img)
			if err != nil {
				b.Fatal(err)
			}
			total += k
		}
		return float64(total) / time.Since(start).Seconds()
	}
	var wT, tT float64
	for i := 0; i < b.N; i++ {
		wT += frames(ws, wsi, 20)
		tT += frames(tc, tsi, 20)
	}
	b.ReportMetric(wT/float64(b.N)/1e6, "websocket-MB/s")
	b.ReportMetric(tT/float64(b.N)/1e6, "vencrypt-tls-MB/s")
	b.ReportMetric(wT/tT, "ratio")
}

// TestRecheckCutsWebSessions: a directory that stops allowing Web Access loses its live
// web sessions at the next Recheck, at once; its zero clients' sessions are left alone.
func TestRecheckCutsWebSessions(t *testing.T) {
	d := newDisplay(t, 64, 32)
	r := newRig(t, d)
	url := webRig(t, r)
	// The zero client's session is for another WorkSpace: one per WorkSpace.
	zc, err := r.tags.Issue(tags.Tag{DirectoryID: "d-0123456789", UserName: "alice", WorkspaceID: "ws-0000000b0b", Client: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	tc, _, err := r.connect(t, rfb.VeNCryptX509Plain, zc.Value)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	c, err := dialWeb(t, url, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := rfb.ClientNone(c); err != nil {
		t.Fatal(err)
	}
	if _, err := rfb.ClientInit(c, true); err != nil {
		t.Fatal(err)
	}
	waitConnected := func(n int) {
		deadline := time.Now().Add(5 * time.Second)
		for len(r.g.Connected()) != n {
			if time.Now().After(deadline) {
				t.Fatalf("Connected() = %v, want %d sessions", r.g.Connected(), n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitConnected(2)
	if n := r.g.Recheck(); n != 0 {
		t.Fatalf("Recheck cut %d sessions while Web Access is allowed", n)
	}
	r.web = false
	start := time.Now()
	if n := r.g.Recheck(); n != 1 {
		t.Fatalf("Recheck cut %d sessions, want the web one", n)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		if _, err := c.Read(make([]byte, 64<<10)); err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatal("the web session stayed open after Web Access was withdrawn")
			}
			break
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the cut took %v to reach the browser", d)
	}
	waitConnected(1)
	if got := r.g.Connected(); got[0] != "ws-0000000b0b" {
		t.Errorf("Connected() = %v: the zero client's session should remain", got)
	}
}
