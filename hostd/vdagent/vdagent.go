// Package vdagent speaks the guest side of the spice agent protocol (spice-protocol's
// vd_agent.h) as far as the clipboard needs: qemu's qemu-vdagent chardev (libvirt
// <channel type='qemu-vdagent'>) is the host side, and it shares its clipboard with qemu's
// VNC server, so text a VNC client (noVNC in the browser) cuts reaches the guest and back.
//
// Wire format, all little-endian: a message is sent as one or more chunks, each a
// VDIChunkHeader {port u32, size u32} followed by size bytes (at most MaxChunkData). The
// first chunk starts with a VDAgentMessage header {protocol u32, type u32, opaque u64,
// size u32} followed by the message's size bytes of data, which continue in the next
// chunks.
//
// The host side is qemu, but what it forwards comes from whoever holds the clipboard, and
// in the other direction the guest is untrusted for hostd: the Reader checks every length
// before it allocates or slices.
package vdagent

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ChannelName is the virtio-serial port name spice agents use.
const ChannelName = "com.redhat.spice.0"

// Protocol constants from vd_agent.h.
const (
	Protocol = 1
	// PortClient is the chunk port of messages between the agent and the client (qemu).
	PortClient = 1
	// MaxChunkData is VD_AGENT_MAX_DATA_SIZE: the most data one chunk carries.
	MaxChunkData = 2048
	chunkHeader  = 8
	msgHeader    = 20
)

// Message types.
const (
	TypeClipboard            = 4
	TypeAnnounceCapabilities = 6
	TypeClipboardGrab        = 7
	TypeClipboardRequest     = 8
	TypeClipboardRelease     = 9
)

// Capability bits.
const (
	CapClipboard           = 3
	CapClipboardByDemand   = 5
	CapClipboardSelection  = 6
	CapClipboardGrabSerial = 17
)

// Clipboard data types and selections.
const (
	ClipboardNone     = 0
	ClipboardUTF8Text = 1

	SelectionClipboard = 0
)

// MaxMessageData is the largest message data the Reader accepts. qemu's own limit on
// what it buffers for the guest is 1 MiB; clipboard text beyond that is refused.
const MaxMessageData = 1<<20 + 64

// Message is one agent message.
type Message struct {
	Type   uint32
	Opaque uint64
	Data   []byte
}

// Reader reassembles messages from chunks.
type Reader struct {
	r   io.Reader
	hdr [chunkHeader]byte
}

// NewReader reads chunks from r.
func NewReader(r io.Reader) *Reader { return &Reader{r: r} }

// chunk reads one chunk into a fresh slice.
func (r *Reader) chunk() ([]byte, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return nil, err
	}
	size := binary.LittleEndian.Uint32(r.hdr[4:])
	if size == 0 || size > MaxChunkData+msgHeader {
		return nil, fmt.Errorf("vdagent: chunk of %d bytes (want 1..%d)", size, MaxChunkData+msgHeader)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r.r, b); err != nil {
		return nil, unexpected(err)
	}
	return b, nil
}

func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Next returns the next whole message. After an error the stream is out of step: the
// caller reopens the port.
func (r *Reader) Next() (Message, error) {
	first, err := r.chunk()
	if err != nil {
		return Message{}, err
	}
	if len(first) < msgHeader {
		return Message{}, fmt.Errorf("vdagent: first chunk of %d bytes is shorter than a message header", len(first))
	}
	if p := binary.LittleEndian.Uint32(first); p != Protocol {
		return Message{}, fmt.Errorf("vdagent: protocol %d, want %d", p, Protocol)
	}
	m := Message{Type: binary.LittleEndian.Uint32(first[4:]), Opaque: binary.LittleEndian.Uint64(first[8:])}
	size := binary.LittleEndian.Uint32(first[16:])
	if size > MaxMessageData {
		return Message{}, fmt.Errorf("vdagent: message of %d bytes exceeds %d", size, MaxMessageData)
	}
	data := first[msgHeader:]
	if uint32(len(data)) > size {
		return Message{}, fmt.Errorf("vdagent: chunk carries %d bytes for a message of %d", len(data), size)
	}
	if uint32(len(data)) < size {
		// Grow as chunks arrive, not by the announced size.
		buf := append([]byte(nil), data...)
		for uint32(len(buf)) < size {
			c, err := r.chunk()
			if err != nil {
				return Message{}, unexpected(err)
			}
			if uint32(len(buf)+len(c)) > size {
				return Message{}, fmt.Errorf("vdagent: chunks carry more than the message's %d bytes", size)
			}
			buf = append(buf, c...)
		}
		data = buf
	}
	m.Data = data
	return m, nil
}

// Encode returns m as chunks ready to write.
func Encode(m Message) []byte {
	body := make([]byte, msgHeader+len(m.Data))
	binary.LittleEndian.PutUint32(body, Protocol)
	binary.LittleEndian.PutUint32(body[4:], m.Type)
	binary.LittleEndian.PutUint64(body[8:], m.Opaque)
	binary.LittleEndian.PutUint32(body[16:], uint32(len(m.Data)))
	copy(body[msgHeader:], m.Data)
	out := make([]byte, 0, len(body)+(len(body)/MaxChunkData+1)*chunkHeader)
	for len(body) > 0 {
		n := min(len(body), MaxChunkData)
		out = binary.LittleEndian.AppendUint32(out, PortClient)
		out = binary.LittleEndian.AppendUint32(out, uint32(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

// Capabilities is an ANNOUNCE_CAPABILITIES message.
type Capabilities struct {
	Request bool   // the peer asks for our capabilities in return
	Caps    uint32 // the first capability word (bits Cap*)
}

// Has reports whether capability bit c is set.
func (c Capabilities) Has(bit uint) bool { return bit < 32 && c.Caps&(1<<bit) != 0 }

// ParseCapabilities decodes the data of an ANNOUNCE_CAPABILITIES message.
func ParseCapabilities(d []byte) (Capabilities, error) {
	if len(d) < 8 {
		return Capabilities{}, fmt.Errorf("vdagent: capabilities of %d bytes, want at least 8", len(d))
	}
	return Capabilities{Request: binary.LittleEndian.Uint32(d) != 0, Caps: binary.LittleEndian.Uint32(d[4:])}, nil
}

// Announce returns an ANNOUNCE_CAPABILITIES message.
func Announce(c Capabilities) Message {
	d := make([]byte, 8)
	if c.Request {
		d[0] = 1
	}
	binary.LittleEndian.PutUint32(d[4:], c.Caps)
	return Message{Type: TypeAnnounceCapabilities, Data: d}
}

// Clip is the decoded data of a clipboard message (GRAB, REQUEST, CLIPBOARD, RELEASE),
// which starts with a selection word when CapClipboardSelection is in use.
type Clip struct {
	Selection uint8
	Types     []uint32 // GRAB: the types on offer
	Type      uint32   // REQUEST, CLIPBOARD
	Data      []byte   // CLIPBOARD
}

// MaxGrabTypes is the most types a GRAB may offer (qemu caps it at 10 as well).
const MaxGrabTypes = 10

// ParseClip decodes the data of clipboard message type t. selection and serial say
// whether the selection word and the grab serial are in use.
func ParseClip(t uint32, d []byte, selection, serial bool) (Clip, error) {
	var c Clip
	if selection {
		if len(d) < 4 {
			return c, fmt.Errorf("vdagent: clipboard message of %d bytes has no selection", len(d))
		}
		c.Selection = d[0]
		d = d[4:]
	}
	switch t {
	case TypeClipboardGrab:
		if serial {
			if len(d) < 4 {
				return c, errors.New("vdagent: clipboard grab without its serial")
			}
			d = d[4:]
		}
		if len(d)%4 != 0 || len(d)/4 > MaxGrabTypes {
			return c, fmt.Errorf("vdagent: clipboard grab with %d bytes of types (want a multiple of 4, at most %d types)", len(d), MaxGrabTypes)
		}
		for ; len(d) > 0; d = d[4:] {
			c.Types = append(c.Types, binary.LittleEndian.Uint32(d))
		}
	case TypeClipboardRequest, TypeClipboard:
		if len(d) < 4 {
			return c, fmt.Errorf("vdagent: clipboard message type %d without its data type", t)
		}
		c.Type = binary.LittleEndian.Uint32(d)
		if t == TypeClipboard {
			c.Data = d[4:]
		} else if len(d) != 4 {
			return c, fmt.Errorf("vdagent: clipboard request of %d bytes, want 4", len(d))
		}
	case TypeClipboardRelease:
		if len(d) != 0 {
			return c, fmt.Errorf("vdagent: clipboard release with %d bytes of data", len(d))
		}
	default:
		return c, fmt.Errorf("vdagent: message type %d is not a clipboard message", t)
	}
	return c, nil
}

// EncodeClip returns clipboard message t (with the selection word when selection).
func EncodeClip(t uint32, c Clip, selection bool) Message {
	var d []byte
	if selection {
		d = append(d, c.Selection, 0, 0, 0)
	}
	switch t {
	case TypeClipboardGrab:
		for _, ty := range c.Types {
			d = binary.LittleEndian.AppendUint32(d, ty)
		}
	case TypeClipboardRequest:
		d = binary.LittleEndian.AppendUint32(d, c.Type)
	case TypeClipboard:
		d = binary.LittleEndian.AppendUint32(d, c.Type)
		d = append(d, c.Data...)
	}
	return Message{Type: t, Data: d}
}
