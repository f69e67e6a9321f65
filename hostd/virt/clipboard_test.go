package virt

import (
	"bytes"
	"compress/zlib"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/internal/desktopimage"
	"deskhost/internal/testenv"

	"libvirt.org/go/libvirtxml"
)

// TestClipboardThroughVNC: text crosses both ways between a VNC client and a real guest,
// through qemu's VNC server, its qemu-vdagent chardev (the domain's clipboard channel)
// and the guest agent's spice agent peer. The client speaks RFB's extended clipboard as
// noVNC does (notify, request, provide): what it cuts is what the agent reads back, and
// what is set in the guest is what the client receives.
func TestClipboardThroughVNC(t *testing.T) {
	sock := testenv.LibvirtSocket(t)
	img, err := desktopimage.Load(testenv.DesktopImage(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := Dial(ctx, sock)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	spec, dir := defineTestGuest(t, conn, &img, "clip", nil)
	name, vncSock, agentSock, serial := spec.Name, spec.VNCSocket, spec.AgentSocket, spec.SerialLog
	suffix := strings.TrimPrefix(name, "clip-")
	if err := conn.Start(name); err != nil {
		t.Fatal(err)
	}
	tail := func() string {
		b, _ := os.ReadFile(serial)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		return string(b)
	}

	actx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	ag, err := agent.Dial(actx, agentSock)
	if err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	if _, err := ag.Status(actx); err != nil {
		t.Fatalf("the guest agent did not answer: %v\n%s", err, tail())
	}
	// The agent announces itself on the clipboard port once it has opened it.
	for !strings.Contains(tail(), "clipboard: serving on") {
		if actx.Err() != nil {
			t.Fatalf("the guest agent never served the clipboard port\n%s", tail())
		}
		time.Sleep(200 * time.Millisecond)
	}

	vc, err := dialVNC(vncSock)
	if err != nil {
		t.Fatal(err)
	}
	defer vc.Close()

	// Client → guest: notify, answer qemu's request with the text, read it in the guest.
	toGuest := "pasted in the browser ✓\nline 2 " + suffix
	if err := vc.cut(extNotify|extText, nil); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	flags, _, err := vc.next(30 * time.Second)
	if err != nil || flags&extRequest == 0 || flags&extText == 0 {
		t.Fatalf("after the client's notify, qemu sent flags %#x (%v), want a text request (the guest agent must ask for the text)\n%s", flags, err, tail())
	}
	// As noVNC sends it: CRLF line ends, NUL-terminated.
	if err := vc.cut(extProvide|extText, provideText(strings.ReplaceAll(toGuest, "\n", "\r\n"))); err != nil {
		t.Fatal(err)
	}
	var got string
	for got != toGuest {
		if got, err = ag.Clipboard(actx); err != nil {
			t.Fatal(err)
		}
		if actx.Err() != nil || time.Since(sent) > 30*time.Second {
			t.Fatalf("the guest's clipboard holds %q, want %q\n%s", got, toGuest, tail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("client → guest: %d bytes in %v", len(toGuest), time.Since(sent).Round(time.Millisecond))

	// Guest → client: set in the guest, qemu notifies the client, which requests it.
	fromGuest := "copied in the guest ✓ " + suffix
	set := time.Now()
	if err := ag.SetClipboard(actx, fromGuest); err != nil {
		t.Fatal(err)
	}
	flags, _, err = vc.next(30 * time.Second)
	if err != nil || flags&extNotify == 0 || flags&extText == 0 {
		t.Fatalf("after the guest set its clipboard, qemu sent flags %#x (%v), want a text notify\n%s", flags, err, tail())
	}
	if err := vc.cut(extRequest|extText, nil); err != nil {
		t.Fatal(err)
	}
	flags, data, err := vc.next(30 * time.Second)
	if err != nil || flags&extProvide == 0 {
		t.Fatalf("after the client's request, qemu sent flags %#x (%v), want provide\n%s", flags, err, tail())
	}
	text, err := readProvided(data)
	if err != nil || text != fromGuest {
		t.Fatalf("the client received %q (%v), want %q", text, err, fromGuest)
	}
	t.Logf("guest → client: %d bytes in %v", len(fromGuest), time.Since(set).Round(time.Millisecond))

	// A save (AutoStop's hibernation) unplugs the clipboard channel, which blocks it, and
	// the restore plugs it back: the restored guest shares its clipboard again.
	vc.Close()
	save := filepath.Join(dir, "state.save")
	if err := conn.Save(name, save); err != nil {
		t.Fatalf("save with the clipboard channel: %v", err)
	}
	if err := conn.RestorePaused(save); err != nil {
		t.Fatal(err)
	}
	if err := conn.Resume(name); err != nil {
		t.Fatal(err)
	}
	if x, err := conn.XML(name); err != nil || !hasClipboardChannel(x.Devices.Channels) {
		t.Fatalf("the restored domain has no clipboard channel (%v)", err)
	}
	if vc, err = dialVNC(vncSock); err != nil {
		t.Fatal(err)
	}
	defer vc.Close()
	ag.Close() // the restored qemu listens on a new agent socket
	if ag, err = agent.Dial(actx, agentSock); err != nil {
		t.Fatal(err)
	}
	defer ag.Close()
	afterRestore := "after the restore " + suffix
	restored := time.Now()
	for {
		// The guest agent reopens the port once it is back.
		err := ag.SetClipboard(actx, afterRestore)
		if err == nil {
			break
		}
		if time.Since(restored) > time.Minute {
			t.Fatalf("the restored guest's clipboard: %v\n%s", err, tail())
		}
		time.Sleep(500 * time.Millisecond)
	}
	if flags, _, err = vc.next(30 * time.Second); err != nil || flags&extNotify == 0 {
		t.Fatalf("after the restore, qemu sent flags %#x (%v), want a text notify\n%s", flags, err, tail())
	}
	if err := vc.cut(extRequest|extText, nil); err != nil {
		t.Fatal(err)
	}
	if flags, data, err = vc.next(30 * time.Second); err != nil || flags&extProvide == 0 {
		t.Fatalf("after the restore, qemu sent flags %#x (%v), want provide", flags, err)
	}
	if text, err := readProvided(data); err != nil || text != afterRestore {
		t.Fatalf("after the restore the client received %q (%v)", text, err)
	}
	t.Logf("save and restore: the clipboard channel was unplugged for the save and is back (guest → client again after %v)", time.Since(restored).Round(time.Millisecond))

	// Bad input from hostd's side changes nothing.
	if err := ag.SetClipboard(actx, "\xff\xfe"); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") {
		t.Errorf("invalid UTF-8: %v", err)
	}
	if got, _ := ag.Clipboard(actx); got != afterRestore {
		t.Errorf("after a refused set the guest clipboard holds %q", got)
	}
}

// RFB extended clipboard (pseudo-encoding 0xC0A1E5CE): the flags word of an extended
// ServerCutText/ClientCutText.
const (
	extText     = 1 << 0
	extCaps     = 1 << 24
	extRequest  = 1 << 25
	extNotify   = 1 << 27
	extProvide  = 1 << 28
	encExtClip  = 0xC0A1E5CE
	maxCutBytes = 1 << 20
)

// vncClient is the least of an RFB client that a clipboard test needs: security None
// (qemu's VNC socket), the extended clipboard, no framebuffer requests.
type vncClient struct{ net.Conn }

func dialVNC(path string) (*vncClient, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	v := &vncClient{c}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	var ver [12]byte
	if _, err := io.ReadFull(c, ver[:]); err != nil {
		return nil, fmt.Errorf("rfb version: %w", err)
	}
	if _, err := c.Write([]byte("RFB 003.008\n")); err != nil {
		return nil, err
	}
	var n [1]byte
	if _, err := io.ReadFull(c, n[:]); err != nil || n[0] == 0 {
		return nil, fmt.Errorf("rfb security types: %d %v", n[0], err)
	}
	types := make([]byte, n[0])
	if _, err := io.ReadFull(c, types); err != nil || !bytes.Contains(types, []byte{1}) {
		return nil, fmt.Errorf("rfb security types %v (want None) %v", types, err)
	}
	var res [4]byte
	if _, err := c.Write([]byte{1}); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(c, res[:]); err != nil || binary.BigEndian.Uint32(res[:]) != 0 {
		return nil, fmt.Errorf("rfb security result %v %v", res, err)
	}
	if _, err := c.Write([]byte{1}); err != nil { // ClientInit: shared
		return nil, err
	}
	var si [24]byte
	if _, err := io.ReadFull(c, si[:]); err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(si[20:]))); err != nil {
		return nil, err
	}
	enc := []byte{2, 0, 0, 2, 0, 0, 0, 0} // SetEncodings: raw, extended clipboard
	enc = binary.BigEndian.AppendUint32(enc, encExtClip)
	if _, err := c.Write(enc); err != nil {
		return nil, err
	}
	// qemu answers the encoding with its clipboard capabilities.
	flags, _, err := v.next(30 * time.Second)
	if err != nil || flags&extCaps == 0 || flags&extText == 0 {
		return nil, fmt.Errorf("qemu's clipboard capabilities: flags %#x %v", flags, err)
	}
	// Ours, as noVNC announces them: text, with every action.
	caps := binary.BigEndian.AppendUint32(nil, maxCutBytes)
	if err := v.cut(extCaps|extText|extRequest|extNotify|extProvide, caps); err != nil {
		return nil, err
	}
	return v, nil
}

// cut sends an extended ClientCutText.
func (v *vncClient) cut(flags uint32, payload []byte) error {
	b := []byte{6, 0, 0, 0}
	b = binary.BigEndian.AppendUint32(b, uint32(-int32(4+len(payload))))
	b = binary.BigEndian.AppendUint32(b, flags)
	_, err := v.Write(append(b, payload...))
	return err
}

// next returns the next extended ServerCutText, skipping bells.
func (v *vncClient) next(timeout time.Duration) (flags uint32, data []byte, err error) {
	_ = v.SetReadDeadline(time.Now().Add(timeout))
	for {
		var typ [1]byte
		if _, err := io.ReadFull(v, typ[:]); err != nil {
			return 0, nil, err
		}
		switch typ[0] {
		case 2: // bell
			continue
		case 3:
		default:
			return 0, nil, fmt.Errorf("unexpected server message %d", typ[0])
		}
		var h [7]byte
		if _, err := io.ReadFull(v, h[:]); err != nil {
			return 0, nil, err
		}
		n := int32(binary.BigEndian.Uint32(h[3:]))
		if n >= 0 || -n < 4 || -n > maxCutBytes {
			return 0, nil, fmt.Errorf("ServerCutText of length %d: not an extended one", n)
		}
		b := make([]byte, -n)
		if _, err := io.ReadFull(v, b); err != nil {
			return 0, nil, err
		}
		return binary.BigEndian.Uint32(b), b[4:], nil
	}
}

// provideText is a provide message's payload: zlib of the text's length (with its NUL)
// and the text.
func provideText(s string) []byte {
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	_ = binary.Write(w, binary.BigEndian, uint32(len(s)+1))
	_, _ = w.Write(append([]byte(s), 0))
	_ = w.Close()
	return z.Bytes()
}

func readProvided(b []byte) (string, error) {
	r, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return "", err
	}
	if n > maxCutBytes {
		return "", fmt.Errorf("provided text of %d bytes", n)
	}
	text := make([]byte, n)
	if _, err := io.ReadFull(r, text); err != nil {
		return "", err
	}
	return strings.TrimRight(string(text), "\x00"), nil
}

func hasClipboardChannel(chs []libvirtxml.DomainChannel) bool {
	for _, c := range chs {
		if c.Source != nil && c.Source.QEMUVDAgent != nil && c.Target != nil && c.Target.VirtIO != nil && c.Target.VirtIO.Name == ClipboardChannel {
			return true
		}
	}
	return false
}
