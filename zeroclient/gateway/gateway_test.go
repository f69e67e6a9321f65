package gateway

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"image"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"deskhost/internal/certs"
	"deskhost/zeroclient/metrics"
	"deskhost/zeroclient/rfb"
	"deskhost/zeroclient/tags"
)

// display is a synthetic RFB server on a unix socket, as qemu's is (None security), that
// answers every FramebufferUpdateRequest at once with raw pixels. It is the load source
// for the gateway's benchmarks: it answers as fast as it can, so what is measured is the
// path (direct socket or gateway), not a display's refresh timer.
type display struct {
	path  string
	w, h  uint16
	frame []byte
}

func newDisplay(t testing.TB, w, h uint16) *display {
	d := &display{path: filepath.Join(t.TempDir(), "vnc.sock"), w: w, h: h, frame: make([]byte, int(w)*int(h)*4)}
	for i := range d.frame {
		d.frame[i] = byte(i * 7)
	}
	l, err := net.Listen("unix", d.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go d.serve(c)
		}
	}()
	return d
}

func (d *display) serve(c net.Conn) {
	defer c.Close()
	c.Write([]byte(rfb.ProtocolVersion38))
	var v [12]byte
	if _, err := io.ReadFull(c, v[:]); err != nil {
		return
	}
	c.Write([]byte{1, rfb.SecNone})
	var b [1]byte
	io.ReadFull(c, b[:])
	c.Write([]byte{0, 0, 0, 0})
	io.ReadFull(c, b[:]) // ClientInit
	c.Write(rfb.ServerInit{Width: d.w, Height: d.h, PixelFormat: rfb.RGB32, Name: "synthetic"}.Bytes())
	// One output buffer for the connection's life: the display itself makes no garbage per
	// update (as qemu, a separate process, makes none in ours), so the garbage collector's
	// cycles, which take a P, do not distort whichever path is being measured.
	var out bytes.Buffer
	for {
		if _, err := io.ReadFull(c, b[:]); err != nil {
			return
		}
		switch b[0] {
		case 0: // SetPixelFormat
			io.CopyN(io.Discard, c, 19)
		case 2: // SetEncodings
			var h [3]byte
			io.ReadFull(c, h[:])
			io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(h[1:]))*4)
		case 3: // FramebufferUpdateRequest
			var r [9]byte
			io.ReadFull(c, r[:])
			x, y := binary.BigEndian.Uint16(r[1:]), binary.BigEndian.Uint16(r[3:])
			w, h := binary.BigEndian.Uint16(r[5:]), binary.BigEndian.Uint16(r[7:])
			out.Reset()
			out.Write([]byte{0, 0, 0, 1})
			binary.Write(&out, binary.BigEndian, [4]uint16{x, y, w, h})
			binary.Write(&out, binary.BigEndian, int32(0))
			for row := 0; row < int(h); row++ {
				off := (int(y)+row)*int(d.w)*4 + int(x)*4
				out.Write(d.frame[off : off+int(w)*4])
			}
			if _, err := c.Write(out.Bytes()); err != nil {
				return
			}
		default:
			return
		}
	}
}

type rig struct {
	g      *Gateway
	addr   string
	tags   *tags.Store
	client *tls.Config
	m      *metrics.Metrics
	allow  bool
	web    bool          // the directory's device access allows Web Access
	change chan struct{} // one per SessionsChanged call
	// panicFor is a WorkSpace whose display lookup panics (a bug in one connection's path).
	panicFor string
}

func newRig(t testing.TB, d *display) *rig {
	dir := t.TempDir()
	cert, err := certs.SelfSigned(dir, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pemCA, _ := readFile(filepath.Join(dir, certs.CAFile))
	pool.AppendCertsFromPEM(pemCA)
	r := &rig{tags: tags.NewStore(time.Minute, nil), client: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}, m: metrics.New(), allow: true, web: true,
		change: make(chan struct{}, 64), panicFor: "ws-panic00001"}
	r.g = New(Config{TLS: certs.ServerConfig(cert), Tags: r.tags, Socket: func(id string) string {
		if id == r.panicFor {
			panic("display lookup bug for " + id)
		}
		return d.path
	},
		Allowed: func(string, netip.Addr) bool { return r.allow }, WebAllowed: func(string) bool { return r.web }, HandshakeTimeout: 10 * time.Second, Metrics: r.m,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), SessionsChanged: func() {
			select {
			case r.change <- struct{}{}:
			default: // a test that does not watch
			}
		}})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = l.Addr().String()
	go r.g.Serve(l)
	t.Cleanup(func() { l.Close(); r.g.Close() })
	return r
}

func (r *rig) issue(t testing.TB) tags.Tag {
	tag, err := r.tags.Issue(tags.Tag{DirectoryID: "d-0123456789", UserName: "alice", WorkspaceID: "ws-0123456789", Client: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	return tag
}

func (r *rig) connect(t testing.TB, sub uint32, tag string) (*tls.Conn, rfb.ServerInit, error) {
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := rfb.ClientVeNCrypt(c, r.client, sub, "alice", tag)
	if err != nil {
		c.Close()
		return nil, rfb.ServerInit{}, err
	}
	si, err := rfb.ClientInit(tc, true)
	return tc, si, err
}

func TestRelayAndTags(t *testing.T) {
	d := newDisplay(t, 64, 32)
	r := newRig(t, d)
	for _, sub := range []uint32{rfb.VeNCryptX509Plain, rfb.VeNCryptX509Vnc} {
		tag := r.issue(t)
		tc, si, err := r.connect(t, sub, tag.Value)
		if err != nil {
			t.Fatalf("%s: %v", rfb.VeNCryptName(sub), err)
		}
		if si.Width != 64 || si.Name != "ws-0123456789" {
			t.Errorf("ServerInit %+v", si)
		}
		img := image.NewRGBA(image.Rect(0, 0, 64, 32))
		rfb.RequestRawFrame(tc, 64, 32, false)
		if n, err := rfb.ReadUpdate(tc, img); err != nil || n != 64*32*4 {
			t.Errorf("frame: %d bytes, %v", n, err)
		}
		tc.Close()
		// The tag is single use.
		var refused *rfb.RefusedError
		if _, _, err := r.connect(t, sub, tag.Value); !errors.As(err, &refused) || refused.Reason != ReasonBadTag {
			t.Errorf("%s reuse: %v", rfb.VeNCryptName(sub), err)
		}
	}
	// A rule change since the allocation refuses the connection with the guide's message.
	r.allow = false
	var refused *rfb.RefusedError
	if _, _, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value); !errors.As(err, &refused) || refused.Reason != ReasonNotAllowed {
		t.Errorf("disallowed address: %v", err)
	}
}

// TestVNCAuthGuessBudget: three wrong VNC-auth answers from an address revoke its tags.
func TestVNCAuthGuessBudget(t *testing.T) {
	r := newRig(t, newDisplay(t, 8, 8))
	tag := r.issue(t)
	for i := 0; i < tags.MaxFailuresPerAddress; i++ {
		if _, _, err := r.connect(t, rfb.VeNCryptX509Vnc, "wrongtag"); err == nil {
			t.Fatal("a wrong tag got in")
		}
	}
	if _, _, err := r.connect(t, rfb.VeNCryptX509Vnc, tag.Value); err == nil {
		t.Error("the tag still worked after the guess budget was spent")
	}
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

// BenchmarkGateway compares the gateway with reading the display's socket directly, in the
// same run: full 720×400 frames (throughput) and 1-pixel updates (round trip).
func BenchmarkGateway(b *testing.B) {
	d := newDisplay(b, 720, 400)
	r := newRig(b, d)
	direct := func() (net.Conn, rfb.ServerInit) {
		c, err := net.Dial("unix", d.path)
		if err != nil {
			b.Fatal(err)
		}
		if err := rfb.ClientNone(c); err != nil {
			b.Fatal(err)
		}
		si, err := rfb.ClientInit(c, true)
		if err != nil {
			b.Fatal(err)
		}
		return c, si
	}
	via := func() (net.Conn, rfb.ServerInit) {
		tc, si, err := r.connect(b, rfb.VeNCryptX509Plain, r.issue(b).Value)
		if err != nil {
			b.Fatal(err)
		}
		return tc, si
	}
	frames := func(c net.Conn, si rfb.ServerInit, n int) float64 {
		img := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
		rfb.RequestRawFrame(c, si.Width, si.Height, false)
		rfb.ReadUpdate(c, img)
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
	pings := func(c net.Conn, n int) []time.Duration {
		img := image.NewRGBA(image.Rect(0, 0, 720, 400))
		var ds []time.Duration
		for i := 0; i < n; i++ {
			start := time.Now()
			rfb.WriteUpdateRequest(c, false, 0, 0, 1, 1)
			if _, err := rfb.ReadUpdate(c, img); err != nil {
				b.Fatal(err)
			}
			ds = append(ds, time.Since(start))
		}
		return ds
	}
	b.Run("throughput", func(b *testing.B) {
		dc, dsi := direct()
		gc, gsi := via()
		defer dc.Close()
		defer gc.Close()
		var dT, gT float64
		for i := 0; i < b.N; i++ { // alternate so both see the same load
			dT += frames(dc, dsi, 20)
			gT += frames(gc, gsi, 20)
		}
		b.ReportMetric(gT/float64(b.N)/1e6, "gateway-MB/s")
		b.ReportMetric(dT/float64(b.N)/1e6, "direct-MB/s")
		b.ReportMetric(gT/dT, "ratio")
	})
	b.Run("latency", func(b *testing.B) {
		dc, _ := direct()
		gc, _ := via()
		defer dc.Close()
		defer gc.Close()
		img := image.NewRGBA(image.Rect(0, 0, 720, 400))
		rfb.RequestRawFrame(dc, 1, 1, false)
		rfb.ReadUpdate(dc, img)
		rfb.RequestRawFrame(gc, 1, 1, false)
		rfb.ReadUpdate(gc, img)
		var dl, gl []time.Duration
		for i := 0; i < b.N; i++ {
			dl = append(dl, pings(dc, 50)...)
			gl = append(gl, pings(gc, 50)...)
		}
		p := func(ds []time.Duration, q int) time.Duration {
			s := slices.Clone(ds)
			slices.Sort(s)
			return s[(len(s)-1)*q/100]
		}
		b.ReportMetric(float64(p(gl, 50).Microseconds()), "gateway-p50-µs")
		b.ReportMetric(float64(p(gl, 99).Microseconds()), "gateway-p99-µs")
		b.ReportMetric(float64(p(dl, 50).Microseconds()), "direct-p50-µs")
		b.ReportMetric(float64(p(dl, 99).Microseconds()), "direct-p99-µs")
		b.ReportMetric(float64((p(gl, 99) - p(dl, 99)).Microseconds()), "added-p99-µs")
	})
}

// countingReader counts the reads a client makes.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.n++
	return c.r.Read(p)
}

// TestRelayLargeFrames: full frames arrive intact through the relay's buffers, in full-size
// TLS records (a buffer that shrank to an earlier short read would turn each frame into
// thousands of tiny records).
func TestRelayLargeFrames(t *testing.T) {
	d := newDisplay(t, 720, 400)
	r := newRig(t, d)
	tc, si, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(30 * time.Second))
	img := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
	rfb.RequestRawFrame(tc, si.Width, si.Height, false)
	if _, err := rfb.ReadUpdate(tc, img); err != nil {
		t.Fatal(err)
	}
	cr := &countingReader{r: tc}
	const frames = 12
	for i := 0; i < frames; i++ {
		clear(img.Pix)
		rfb.WriteUpdateRequest(tc, false, 0, 0, si.Width, si.Height)
		if n, err := rfb.ReadUpdate(cr, img); err != nil || n != len(d.frame) {
			t.Fatalf("frame %d: %d bytes, %v", i, n, err)
		}
		for p := 0; p < len(d.frame); p += 4 {
			px := img.Pix[p:]
			if px[0] != d.frame[p+2] || px[1] != d.frame[p+1] || px[2] != d.frame[p] {
				t.Fatalf("frame %d: pixel %d differs from the display's", i, p/4)
			}
		}
	}
	// ReadUpdate reads row by row (400 rows), plus one more read at each record boundary.
	if perFrame := cr.n / frames; perFrame > 1000 {
		t.Errorf("%d reads per frame: the relay sends small TLS records", perFrame)
	}
}

// TestTakeoverDoesNotWaitForAStalledClient: a client that stops reading leaves the relay
// blocked writing to it; a reconnect for the WorkSpace must still take over at once.
func TestTakeoverDoesNotWaitForAStalledClient(t *testing.T) {
	d := newDisplay(t, 720, 400)
	r := newRig(t, d)
	stalled, si, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer stalled.Close()
	// Ask for far more than the socket buffers hold, and read none of it.
	for i := 0; i < 40; i++ {
		rfb.WriteUpdateRequest(stalled, false, 0, 0, si.Width, si.Height)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	tc, si, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	img := image.NewRGBA(image.Rect(0, 0, int(si.Width), int(si.Height)))
	rfb.RequestRawFrame(tc, si.Width, si.Height, false)
	if _, err := rfb.ReadUpdate(tc, img); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the takeover took %s", d)
	}
}

// TestConnectedSessions: Connected lists a WorkSpace while a session streams it, and
// SessionsChanged fires when the session begins and when it ends (hostd's AutoStop and
// connection status follow it through zeroclient/presence).
func TestConnectedSessions(t *testing.T) {
	d := newDisplay(t, 64, 32)
	r := newRig(t, d)
	wait := func(what string) {
		t.Helper()
		select {
		case <-r.change:
		case <-time.After(5 * time.Second):
			t.Fatalf("no SessionsChanged when %s", what)
		}
	}
	if c := r.g.Connected(); len(c) != 0 {
		t.Fatalf("connected before any session: %v", c)
	}
	tc, _, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	wait("the session began")
	if c := r.g.Connected(); len(c) != 1 || c[0] != "ws-0123456789" {
		t.Errorf("connected during the session: %v", c)
	}
	tc.Close()
	wait("the session ended")
	if c := r.g.Connected(); len(c) != 0 {
		t.Errorf("connected after the session ended: %v", c)
	}
}

// TestPanicEndsOneConnection: a panic in one connection's handling closes that connection
// and nothing else: the gateway goes on serving (without the recover, the test binary
// itself dies).
func TestPanicEndsOneConnection(t *testing.T) {
	r := newRig(t, newDisplay(t, 8, 8))
	tag, err := r.tags.Issue(tags.Tag{DirectoryID: "d-0123456789", UserName: "alice", WorkspaceID: r.panicFor, Client: netip.MustParseAddr("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.connect(t, rfb.VeNCryptX509Plain, tag.Value); err == nil {
		t.Fatal("the connection whose handling panicked got through")
	}
	tc, _, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatalf("after a panic in another connection: %v", err)
	}
	tc.Close()
}

// TestRecheckCutsSessions: a live session whose client address the directory's groups no
// longer allow is cut by Recheck; one still allowed is left alone.
func TestRecheckCutsSessions(t *testing.T) {
	d := newDisplay(t, 64, 32)
	r := newRig(t, d)
	tc, _, err := r.connect(t, rfb.VeNCryptX509Plain, r.issue(t).Value)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	select {
	case <-r.change:
	case <-time.After(5 * time.Second):
		t.Fatal("the session did not begin")
	}
	if n := r.g.Recheck(); n != 0 {
		t.Fatalf("Recheck cut %d sessions that are still allowed", n)
	}
	r.allow = false
	start := time.Now()
	if n := r.g.Recheck(); n != 1 {
		t.Fatalf("Recheck cut %d sessions, want 1", n)
	}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, tc); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the client's connection stayed open after the cut")
		}
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the cut took %v to reach the client", d)
	}
	select {
	case <-r.change:
	case <-time.After(5 * time.Second):
		t.Fatal("no SessionsChanged after the cut")
	}
	if c := r.g.Connected(); len(c) != 0 {
		t.Errorf("connected after the cut: %v", c)
	}
}
