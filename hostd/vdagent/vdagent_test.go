package vdagent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRoundTripAcrossChunks(t *testing.T) {
	text := []byte(strings.Repeat("clipboard ✓ ", 700)) // ~9 KiB: five chunks
	var stream []byte
	stream = append(stream, Encode(Announce(Capabilities{Request: true, Caps: 1<<CapClipboardByDemand | 1<<CapClipboardSelection}))...)
	stream = append(stream, Encode(EncodeClip(TypeClipboard, Clip{Type: ClipboardUTF8Text, Data: text}, true))...)
	stream = append(stream, Encode(EncodeClip(TypeClipboardGrab, Clip{Types: []uint32{ClipboardUTF8Text}}, true))...)
	r := NewReader(bytes.NewReader(stream))

	m, err := r.Next()
	if err != nil || m.Type != TypeAnnounceCapabilities {
		t.Fatalf("announce: %+v %v", m, err)
	}
	caps, err := ParseCapabilities(m.Data)
	if err != nil || !caps.Request || !caps.Has(CapClipboardByDemand) || !caps.Has(CapClipboardSelection) || caps.Has(CapClipboardGrabSerial) {
		t.Fatalf("capabilities %+v %v", caps, err)
	}
	m, err = r.Next()
	if err != nil || m.Type != TypeClipboard {
		t.Fatalf("clipboard: %v", err)
	}
	c, err := ParseClip(m.Type, m.Data, true, false)
	if err != nil || c.Type != ClipboardUTF8Text || !bytes.Equal(c.Data, text) {
		t.Fatalf("clipboard data: %d bytes, type %d, %v", len(c.Data), c.Type, err)
	}
	m, _ = r.Next()
	c, err = ParseClip(m.Type, m.Data, true, false)
	if err != nil || len(c.Types) != 1 || c.Types[0] != ClipboardUTF8Text {
		t.Fatalf("grab %+v %v", c, err)
	}
	if _, err := r.Next(); !errors.Is(err, io.EOF) {
		t.Fatalf("after the last message: %v, want EOF", err)
	}
}

// chunks builds a stream by hand: each element is one chunk's payload.
func chunks(payloads ...[]byte) []byte {
	var b []byte
	for _, p := range payloads {
		b = binary.LittleEndian.AppendUint32(b, PortClient)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

func header(proto, typ, size uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, proto)
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = binary.LittleEndian.AppendUint64(b, 0)
	return binary.LittleEndian.AppendUint32(b, size)
}

func TestReaderRefuses(t *testing.T) {
	huge := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, 1), 1<<31)
	for name, tc := range map[string]struct {
		stream []byte
		want   string
	}{
		"chunk too large":        {huge, "chunk of 2147483648 bytes"},
		"empty chunk":            {chunks([]byte{}), "chunk of 0 bytes"},
		"short header":           {chunks([]byte{1, 0, 0, 0}), "shorter than a message header"},
		"wrong protocol":         {chunks(header(2, TypeClipboard, 0)), "protocol 2"},
		"message too large":      {chunks(header(1, TypeClipboard, MaxMessageData+1)), "exceeds"},
		"chunk overshoots":       {chunks(append(header(1, TypeClipboard, 2), 1, 2, 3)), "for a message of 2"},
		"later chunk overshoots": {chunks(append(header(1, TypeClipboard, 3), 1), []byte{2, 3, 4}), "more than the message's 3 bytes"},
		"truncated":              {chunks(header(1, TypeClipboard, 5))[:20], "unexpected EOF"},
		"missing continuation":   {chunks(append(header(1, TypeClipboard, 5), 1)), "unexpected EOF"},
	} {
		_, err := NewReader(bytes.NewReader(tc.stream)).Next()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
}

func TestParseClipRefuses(t *testing.T) {
	for name, tc := range map[string]struct {
		typ  uint32
		data []byte
		want string
	}{
		"no selection":      {TypeClipboardGrab, []byte{0, 0}, "has no selection"},
		"ragged grab":       {TypeClipboardGrab, []byte{0, 0, 0, 0, 1, 0}, "multiple of 4"},
		"too many types":    {TypeClipboardGrab, make([]byte, 4+4*(MaxGrabTypes+1)), "at most"},
		"request no type":   {TypeClipboardRequest, []byte{0, 0, 0, 0}, "without its data type"},
		"request too long":  {TypeClipboardRequest, make([]byte, 12), "want 4"},
		"release with data": {TypeClipboardRelease, make([]byte, 8), "release with 4 bytes"},
		"not clipboard":     {TypeAnnounceCapabilities, make([]byte, 8), "not a clipboard message"},
	} {
		_, err := ParseClip(tc.typ, tc.data, true, false)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, tc.want)
		}
	}
	if _, err := ParseCapabilities([]byte{1, 0, 0}); err == nil {
		t.Error("3 bytes of capabilities accepted")
	}
}

// FuzzReader: whatever the peer sends, the reader neither panics nor holds more than the
// stream carried, and what it returns re-encodes to a stream that reads back the same.
func FuzzReader(f *testing.F) {
	f.Add(Encode(Announce(Capabilities{Request: true, Caps: 1 << CapClipboardByDemand})))
	f.Add(Encode(EncodeClip(TypeClipboard, Clip{Type: ClipboardUTF8Text, Data: bytes.Repeat([]byte("x"), 3000)}, true)))
	f.Add(Encode(EncodeClip(TypeClipboardGrab, Clip{Types: []uint32{1, 2}}, true)))
	f.Add(chunks(append(header(1, TypeClipboard, 3), 1), []byte{2, 3, 4}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := NewReader(bytes.NewReader(b))
		for {
			m, err := r.Next()
			if err != nil {
				return
			}
			if len(m.Data) > len(b) {
				t.Fatalf("a message of %d bytes from a stream of %d", len(m.Data), len(b))
			}
			for _, sel := range []bool{false, true} {
				if c, err := ParseClip(m.Type, m.Data, sel, false); err == nil && len(c.Data) > len(m.Data) {
					t.Fatal("clip data longer than the message")
				}
			}
			back, err := NewReader(bytes.NewReader(Encode(m))).Next()
			if err != nil || back.Type != m.Type || back.Opaque != m.Opaque || !bytes.Equal(back.Data, m.Data) {
				t.Fatalf("re-encoded message reads back as %+v %v", back, err)
			}
		}
	})
}
