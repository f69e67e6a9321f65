package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/vdagent"

	"golang.org/x/sys/unix"
)

// TestClipboardPeer: the agent's side of the clipboard against a scripted host over a
// socket pair (the real host, qemu, is in hostd/virt's TestClipboardThroughVNC).
func TestClipboardPeer(t *testing.T) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.SetNonblock(fds[0], true); err != nil {
		t.Fatal(err)
	}
	host := os.NewFile(uintptr(fds[1]), "host")
	defer host.Close()
	c := newClipboard(newLogger(io.Discard))
	done := make(chan error, 1)
	go func() { done <- c.serve(fds[0]) }()
	r := vdagent.NewReader(host)
	next := func(want uint32) vdagent.Message {
		t.Helper()
		_ = host.SetReadDeadline(time.Now().Add(5 * time.Second))
		m, err := r.Next()
		if err != nil || m.Type != want {
			t.Fatalf("from the agent: type %d %v, want type %d", m.Type, err, want)
		}
		return m
	}
	send := func(m vdagent.Message) {
		t.Helper()
		if _, err := host.Write(vdagent.Encode(m)); err != nil {
			t.Fatal(err)
		}
	}

	caps, _ := vdagent.ParseCapabilities(next(vdagent.TypeAnnounceCapabilities).Data)
	if !caps.Request || !caps.Has(vdagent.CapClipboardByDemand) || !caps.Has(vdagent.CapClipboardSelection) {
		t.Fatalf("the agent announces %+v", caps)
	}
	send(vdagent.Announce(vdagent.Capabilities{Request: true, Caps: 1<<vdagent.CapClipboardByDemand | 1<<vdagent.CapClipboardSelection}))
	if caps, _ = vdagent.ParseCapabilities(next(vdagent.TypeAnnounceCapabilities).Data); caps.Request {
		t.Fatal("the agent's answer asks again")
	}

	// The host grabs: the agent asks for the text and keeps it, as a Linux guest holds it.
	send(vdagent.EncodeClip(vdagent.TypeClipboardGrab, vdagent.Clip{Types: []uint32{vdagent.ClipboardUTF8Text}}, true))
	req, err := vdagent.ParseClip(vdagent.TypeClipboardRequest, next(vdagent.TypeClipboardRequest).Data, true, false)
	if err != nil || req.Type != vdagent.ClipboardUTF8Text {
		t.Fatalf("request %+v %v", req, err)
	}
	send(vdagent.EncodeClip(vdagent.TypeClipboard, vdagent.Clip{Type: vdagent.ClipboardUTF8Text, Data: []byte("one ✓\r\ntwo\x00")}, true))
	deadline := time.Now().Add(5 * time.Second)
	for c.get() != "one ✓\ntwo" {
		if time.Now().After(deadline) {
			t.Fatalf("the guest clipboard holds %q", c.get())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Text for the primary selection, or not UTF-8, changes nothing.
	send(vdagent.EncodeClip(vdagent.TypeClipboard, vdagent.Clip{Selection: 1, Type: vdagent.ClipboardUTF8Text, Data: []byte("primary")}, true))
	send(vdagent.EncodeClip(vdagent.TypeClipboard, vdagent.Clip{Type: vdagent.ClipboardUTF8Text, Data: []byte("\xff\xfe")}, true))
	send(vdagent.EncodeClip(vdagent.TypeClipboardGrab, vdagent.Clip{Types: []uint32{vdagent.ClipboardUTF8Text}}, true))
	next(vdagent.TypeClipboardRequest) // the messages before it have been handled
	if got := c.get(); got != "one ✓\ntwo" {
		t.Fatalf("after primary-selection and invalid text the clipboard holds %q", got)
	}

	// Set in the guest: offered to the host, and given when the host asks.
	if err := c.set("from the guest"); err != nil {
		t.Fatal(err)
	}
	grab, _ := vdagent.ParseClip(vdagent.TypeClipboardGrab, next(vdagent.TypeClipboardGrab).Data, true, false)
	if len(grab.Types) != 1 || grab.Types[0] != vdagent.ClipboardUTF8Text {
		t.Fatalf("grab %+v", grab)
	}
	send(vdagent.EncodeClip(vdagent.TypeClipboardRequest, vdagent.Clip{Type: vdagent.ClipboardUTF8Text}, true))
	data, _ := vdagent.ParseClip(vdagent.TypeClipboard, next(vdagent.TypeClipboard).Data, true, false)
	if string(data.Data) != "from the guest" {
		t.Fatalf("the host received %q", data.Data)
	}

	// A stream out of step ends the port's session (the loop reopens it).
	if _, err := host.Write([]byte{1, 0, 0, 0, 0, 0, 0, 0x10}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "chunk of") {
			t.Fatalf("serve ended with %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a bad chunk did not end the session")
	}
	if c.get() != "from the guest" {
		t.Errorf("the clipboard holds %q", c.get())
	}
}
