package main

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"deskhost/hostd/agent"
	"deskhost/hostd/vdagent"

	"golang.org/x/sys/unix"
)

// clipboard is the guest's clipboard, shared with the host through the spice agent port
// (hostd/vdagent): qemu's qemu-vdagent chardev passes it to and from its VNC server, so a
// VNC client's (the browser's) cut text lands here and text set here reaches the client.
// The tiny image has no desktop to paste into: the agent keeps the text, and hostd reads
// and sets it through the agent's clipboard-get and clipboard-set ops.
type clipboard struct {
	log *logger

	mu        sync.Mutex
	fd        int  // the open port, or -1
	selection bool // the selection word is in use (both sides announced it)
	text      string
	guestOwns bool // text was set in the guest: answer the host's requests with it
}

// The capabilities the agent announces: clipboard on demand, with selections.
const clipboardCaps = 1<<vdagent.CapClipboardByDemand | 1<<vdagent.CapClipboardSelection

func newClipboard(l *logger) *clipboard { return &clipboard{log: l, fd: -1} }

// loop serves the port while it exists. A domain without the channel (clipboard
// redirection disabled) has no such port: the agent looks again every few seconds.
func (c *clipboard) loop() {
	for {
		dev, err := findPort("/sys/class/virtio-ports", vdagent.ChannelName)
		if err != nil {
			time.Sleep(3 * time.Second)
			continue
		}
		fd, err := openPort(dev)
		if err != nil {
			c.log.Printf("clipboard: opening %s: %v", dev, err)
			time.Sleep(3 * time.Second)
			continue
		}
		err = c.serve(fd)
		c.mu.Lock()
		c.fd = -1
		c.mu.Unlock()
		unix.Close(fd)
		c.log.Printf("clipboard: port %s: %v; reopening", dev, err)
		time.Sleep(time.Second)
	}
}

func (c *clipboard) send(m vdagent.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sendLocked(m)
}

func (c *clipboard) sendLocked(m vdagent.Message) error {
	if c.fd < 0 {
		return errors.New("the clipboard channel is not open")
	}
	return writeAll(c.fd, vdagent.Encode(m), writeTimeout)
}

func (c *clipboard) serve(fd int) error {
	c.mu.Lock()
	c.fd, c.selection = fd, false
	err := c.sendLocked(vdagent.Announce(vdagent.Capabilities{Request: true, Caps: clipboardCaps}))
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("announcing capabilities: %w", err)
	}
	c.log.Printf("clipboard: serving on %s", vdagent.ChannelName)
	r := vdagent.NewReader(&portReader{fd: fd})
	for {
		m, err := r.Next()
		if errors.Is(err, errHostGone) {
			continue
		}
		if err != nil {
			return err
		}
		if err := c.handle(m); err != nil {
			c.log.Printf("clipboard: %v", err)
		}
	}
}

// handle answers one message from the host. A malformed clipboard message is reported
// and ignored: the stream itself is still in step.
func (c *clipboard) handle(m vdagent.Message) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.Type == vdagent.TypeAnnounceCapabilities {
		caps, err := vdagent.ParseCapabilities(m.Data)
		if err != nil {
			return err
		}
		c.selection = caps.Has(vdagent.CapClipboardSelection)
		if caps.Request {
			return c.sendLocked(vdagent.Announce(vdagent.Capabilities{Caps: clipboardCaps}))
		}
		return nil
	}
	switch m.Type {
	case vdagent.TypeClipboardGrab, vdagent.TypeClipboardRequest, vdagent.TypeClipboard, vdagent.TypeClipboardRelease:
	default:
		return nil // mouse, monitors...: not this agent's business
	}
	clip, err := vdagent.ParseClip(m.Type, m.Data, c.selection, false)
	if err != nil {
		return err
	}
	if clip.Selection != vdagent.SelectionClipboard {
		return nil // the X primary selection: there is none here
	}
	switch m.Type {
	case vdagent.TypeClipboardGrab:
		// The host holds new text: fetch it at once, so the guest has it.
		for _, t := range clip.Types {
			if t == vdagent.ClipboardUTF8Text {
				c.guestOwns = false
				return c.sendLocked(vdagent.EncodeClip(vdagent.TypeClipboardRequest,
					vdagent.Clip{Type: vdagent.ClipboardUTF8Text}, c.selection))
			}
		}
	case vdagent.TypeClipboard:
		if clip.Type != vdagent.ClipboardUTF8Text || c.guestOwns {
			return nil
		}
		if !utf8.Valid(clip.Data) || len(clip.Data) > agent.MaxClipboardBytes {
			return fmt.Errorf("text from the host refused: %d bytes, valid UTF-8 %v (at most %d bytes of UTF-8)",
				len(clip.Data), utf8.Valid(clip.Data), agent.MaxClipboardBytes)
		}
		c.text = hostText(clip.Data)
		c.log.Printf("clipboard: %d bytes of text from the host", len(c.text))
	case vdagent.TypeClipboardRequest:
		var data []byte // nothing to give: an empty answer, as spice-vdagent does
		if c.guestOwns && clip.Type == vdagent.ClipboardUTF8Text {
			data = []byte(c.text)
		}
		return c.sendLocked(vdagent.EncodeClip(vdagent.TypeClipboard,
			vdagent.Clip{Type: clip.Type, Data: data}, c.selection))
	case vdagent.TypeClipboardRelease:
	}
	return nil
}

// get returns the clipboard's text.
func (c *clipboard) get() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.text
}

// set makes text the clipboard's and offers it to the host.
func (c *clipboard) set(text string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.text, c.guestOwns = text, true
	err := c.sendLocked(vdagent.EncodeClip(vdagent.TypeClipboardGrab,
		vdagent.Clip{Types: []uint32{vdagent.ClipboardUTF8Text}}, c.selection))
	if err != nil {
		return fmt.Errorf("offering the clipboard to the host: %w", err)
	}
	c.log.Printf("clipboard: %d bytes of text set in the guest, offered to the host", len(text))
	return nil
}

// hostText is text from a VNC client as a Linux guest holds it: RFB's extended clipboard
// sends NUL-terminated text with CRLF line ends (noVNC does), which qemu passes on as is.
func hostText(b []byte) string {
	s := strings.TrimSuffix(string(b), "\x00")
	return strings.ReplaceAll(s, "\r\n", "\n")
}
