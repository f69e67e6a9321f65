package gateway

import (
	"image"
	"net"
	"testing"
	"time"

	"deskhost/zeroclient/rfb"
)

// TestInSessionLatency: while a user is connected, over VeNCrypt or Web Access, the
// WorkSpace has an InSessionLatency sample (the connection's measured round trip, on
// loopback well under a second and above zero); when the session ends the series goes.
func TestInSessionLatency(t *testing.T) {
	d := newDisplay(t, 64, 32)
	r := newRig(t, d)
	r.g.c.LatencyInterval = 20 * time.Millisecond
	url := webRig(t, r)
	for _, path := range []string{"VeNCrypt", "Web Access"} {
		tag := r.issue(t)
		var c net.Conn
		var err error
		if path == "VeNCrypt" {
			c, _, err = r.connect(t, rfb.VeNCryptX509Plain, tag.Value)
		} else {
			c, err = dialWeb(t, url, tag.Value)
			if err == nil {
				err = rfb.ClientNone(c)
			}
			if err == nil {
				_, err = rfb.ClientInit(c, true)
			}
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		// Traffic both ways, so the kernel has round trips to measure.
		img := image.NewRGBA(image.Rect(0, 0, 64, 32))
		for range 3 {
			rfb.RequestRawFrame(c, 64, 32, false)
			if _, err := rfb.ReadUpdate(c, img); err != nil {
				t.Fatalf("%s: frame: %v", path, err)
			}
		}
		var rtt float64
		var ok bool
		deadline := time.Now().Add(5 * time.Second)
		for rtt, ok = r.latency(t); !ok || rtt <= 0; rtt, ok = r.latency(t) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: no InSessionLatency sample during the session (%v, %v)", path, rtt, ok)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if rtt >= 1 {
			t.Errorf("%s: InSessionLatency %v s on loopback", path, rtt)
		}
		t.Logf("%s: InSessionLatency %.6f s", path, rtt)
		c.Close()
		deadline = time.Now().Add(5 * time.Second)
		for _, ok = r.latency(t); ok; _, ok = r.latency(t) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the InSessionLatency series outlived the session", path)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// latency returns the WorkSpace's InSessionLatency sample, if it has one.
func (r *rig) latency(t *testing.T) (float64, bool) {
	t.Helper()
	mfs, err := r.m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "deskhost_zeroclient_in_session_latency_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			lv := map[string]string{}
			for _, l := range m.GetLabel() {
				lv[l.GetName()] = l.GetValue()
			}
			if lv["workspace_id"] == "ws-0123456789" && lv["directory_id"] == "d-0123456789" {
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}
