// Package rfb is the part of the RFB (VNC) protocol, RFC 6143 plus VeNCrypt, that the
// gateway and the reference client need: the version and security handshakes on both sides,
// VeNCrypt's TLS sub-types with VNC or Plain authentication inside, ClientInit/ServerInit,
// and, for the reference client, raw-encoded framebuffer updates. After the handshake the
// gateway relays bytes unchanged, so nothing else of the protocol is needed here.
package rfb

import (
	"bytes"
	"crypto/des"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
)

// Security types (RFC 6143 §7.2.1 and the IANA registry).
const (
	SecInvalid   uint8 = 0
	SecNone      uint8 = 1
	SecVNC       uint8 = 2
	SecVeNCrypt  uint8 = 19
	maxReasonLen       = 1 << 16
)

// VeNCrypt sub-types. Only the X509 ones are offered: the TLS* ones use anonymous
// Diffie-Hellman, which authenticates no server and which Go's TLS does not implement.
const (
	VeNCryptPlain     uint32 = 256
	VeNCryptTLSNone   uint32 = 257
	VeNCryptTLSVnc    uint32 = 258
	VeNCryptTLSPlain  uint32 = 259
	VeNCryptX509None  uint32 = 260
	VeNCryptX509Vnc   uint32 = 261
	VeNCryptX509Plain uint32 = 262
)

// VeNCryptName names a sub-type as TigerVNC's -SecurityTypes does.
func VeNCryptName(t uint32) string {
	switch t {
	case VeNCryptPlain:
		return "Plain"
	case VeNCryptTLSNone:
		return "TLSNone"
	case VeNCryptTLSVnc:
		return "TLSVnc"
	case VeNCryptTLSPlain:
		return "TLSPlain"
	case VeNCryptX509None:
		return "X509None"
	case VeNCryptX509Vnc:
		return "X509Vnc"
	case VeNCryptX509Plain:
		return "X509Plain"
	}
	return fmt.Sprintf("VeNCrypt(%d)", t)
}

// ProtocolVersion38 is what this side speaks.
const ProtocolVersion38 = "RFB 003.008\n"

// ParseVersion parses a 12-byte ProtocolVersion message and returns its minor version
// (3.x); Apple's 3.889 counts as 3.8.
func ParseVersion(b []byte) (major, minor int, err error) {
	if len(b) != 12 || !bytes.HasPrefix(b, []byte("RFB ")) || b[7] != '.' || b[11] != '\n' {
		return 0, 0, fmt.Errorf("not an RFB protocol version: %q", b)
	}
	if _, err := fmt.Sscanf(string(b), "RFB %03d.%03d\n", &major, &minor); err != nil {
		return 0, 0, fmt.Errorf("not an RFB protocol version: %q", b)
	}
	if major == 3 && minor == 889 {
		minor = 8
	}
	return major, minor, nil
}

// WriteSecurityFailure refuses a client before any security type is chosen: 3.7+ gets a
// zero-length list and a reason; 3.3 gets security type 0 and the reason.
func WriteSecurityFailure(w io.Writer, minor int, reason string) error {
	var b bytes.Buffer
	if minor >= 7 {
		b.WriteByte(0)
	} else {
		binary.Write(&b, binary.BigEndian, uint32(0))
	}
	writeString(&b, reason)
	_, err := w.Write(b.Bytes())
	return err
}

// WriteSecurityResult sends SecurityResult: OK, or failed with a reason (3.8 only).
func WriteSecurityResult(w io.Writer, minor int, ok bool, reason string) error {
	var b bytes.Buffer
	if ok {
		binary.Write(&b, binary.BigEndian, uint32(0))
	} else {
		binary.Write(&b, binary.BigEndian, uint32(1))
		if minor >= 8 {
			writeString(&b, reason)
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

func writeString(b *bytes.Buffer, s string) {
	binary.Write(b, binary.BigEndian, uint32(len(s)))
	b.WriteString(s)
}

func readString(r io.Reader, max int) (string, error) {
	var n uint32
	if err := binary.Read(r, binary.BigEndian, &n); err != nil {
		return "", err
	}
	if int(n) > max {
		return "", fmt.Errorf("string of %d bytes is over the limit of %d", n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", err
	}
	return string(b), nil
}

// ServerVeNCrypt runs the server side of VeNCrypt's negotiation (after the client chose
// security type 19): version 0.2, the sub-types offered, the client's choice, and the
// acknowledgement. It returns the chosen sub-type.
func ServerVeNCrypt(rw io.ReadWriter, offer []uint32) (uint32, error) {
	if _, err := rw.Write([]byte{0, 2}); err != nil {
		return 0, err
	}
	var v [2]byte
	if _, err := io.ReadFull(rw, v[:]); err != nil {
		return 0, fmt.Errorf("VeNCrypt version: %w", err)
	}
	if v != [2]byte{0, 2} {
		rw.Write([]byte{1}) // refuse the version
		return 0, fmt.Errorf("VeNCrypt version %d.%d; only 0.2 is spoken", v[0], v[1])
	}
	var b bytes.Buffer
	b.WriteByte(0) // version accepted
	b.WriteByte(byte(len(offer)))
	for _, t := range offer {
		binary.Write(&b, binary.BigEndian, t)
	}
	if _, err := rw.Write(b.Bytes()); err != nil {
		return 0, err
	}
	var chosen uint32
	if err := binary.Read(rw, binary.BigEndian, &chosen); err != nil {
		return 0, fmt.Errorf("VeNCrypt sub-type: %w", err)
	}
	for _, t := range offer {
		if t == chosen {
			_, err := rw.Write([]byte{1})
			return chosen, err
		}
	}
	rw.Write([]byte{0})
	return 0, fmt.Errorf("client chose VeNCrypt sub-type %s, which was not offered", VeNCryptName(chosen))
}

// ServerVNCChallenge sends a fresh 16-byte challenge and reads the client's response.
func ServerVNCChallenge(rw io.ReadWriter) (challenge, response [16]byte, err error) {
	if _, err = rand.Read(challenge[:]); err != nil {
		return
	}
	if _, err = rw.Write(challenge[:]); err != nil {
		return
	}
	_, err = io.ReadFull(rw, response[:])
	return
}

// ServerPlain reads VeNCrypt Plain's credentials (lengths first, then the strings).
func ServerPlain(r io.Reader) (user, password string, err error) {
	var lens [2]uint32
	if err = binary.Read(r, binary.BigEndian, &lens); err != nil {
		return
	}
	if lens[0] > 1024 || lens[1] > 1024 {
		return "", "", errors.New("VeNCrypt Plain credentials longer than 1024 bytes")
	}
	b := make([]byte, lens[0]+lens[1])
	if _, err = io.ReadFull(r, b); err != nil {
		return
	}
	return string(b[:lens[0]]), string(b[lens[0]:]), nil
}

// ServerInit is the server's first message after ClientInit.
type ServerInit struct {
	Width, Height uint16
	PixelFormat   PixelFormat
	Name          string
}

// PixelFormat is RFB's 16-byte pixel format.
type PixelFormat struct {
	BitsPerPixel, Depth, BigEndian, TrueColour uint8
	RedMax, GreenMax, BlueMax                  uint16
	RedShift, GreenShift, BlueShift            uint8
	_                                          [3]byte
}

// ReadServerInit reads a ServerInit.
func ReadServerInit(r io.Reader) (ServerInit, error) {
	var s ServerInit
	var hdr struct {
		W, H uint16
		PF   PixelFormat
	}
	if err := binary.Read(r, binary.BigEndian, &hdr); err != nil {
		return s, fmt.Errorf("ServerInit: %w", err)
	}
	name, err := readString(r, 4096)
	if err != nil {
		return s, fmt.Errorf("ServerInit name: %w", err)
	}
	return ServerInit{Width: hdr.W, Height: hdr.H, PixelFormat: hdr.PF, Name: name}, nil
}

// Bytes encodes a ServerInit.
func (s ServerInit) Bytes() []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, struct {
		W, H uint16
		PF   PixelFormat
	}{s.Width, s.Height, s.PixelFormat})
	writeString(&b, s.Name)
	return b.Bytes()
}

// ClientNone runs a client's side of the handshake up to SecurityResult against a server
// that offers None (qemu's VNC server on a unix socket): version 3.8, security None.
func ClientNone(rw io.ReadWriter) error {
	if err := clientVersion(rw); err != nil {
		return err
	}
	types, err := readSecurityTypes(rw)
	if err != nil {
		return err
	}
	if !bytes.Contains(types, []byte{SecNone}) {
		return fmt.Errorf("server offers security types %v, not None", types)
	}
	if _, err := rw.Write([]byte{SecNone}); err != nil {
		return err
	}
	return readSecurityResult(rw)
}

func clientVersion(rw io.ReadWriter) error {
	var v [12]byte
	if _, err := io.ReadFull(rw, v[:]); err != nil {
		return fmt.Errorf("RFB version: %w", err)
	}
	major, minor, err := ParseVersion(v[:])
	if err != nil {
		return err
	}
	if major != 3 || minor < 8 {
		return fmt.Errorf("server speaks RFB %d.%d; 3.8 is needed", major, minor)
	}
	_, err = rw.Write([]byte(ProtocolVersion38))
	return err
}

func readSecurityTypes(r io.Reader) ([]byte, error) {
	var n [1]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, fmt.Errorf("security types: %w", err)
	}
	if n[0] == 0 {
		reason, _ := readString(r, maxReasonLen)
		return nil, &RefusedError{Reason: reason}
	}
	types := make([]byte, n[0])
	_, err := io.ReadFull(r, types)
	return types, err
}

// RefusedError is a server's refusal, with its reason.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return "refused by the server: " + e.Reason }

func readSecurityResult(r io.Reader) error {
	var res uint32
	if err := binary.Read(r, binary.BigEndian, &res); err != nil {
		return fmt.Errorf("security result: %w", err)
	}
	if res != 0 {
		reason, _ := readString(r, maxReasonLen)
		return &RefusedError{Reason: reason}
	}
	return nil
}

// ClientInit sends ClientInit and reads the ServerInit that answers it.
func ClientInit(rw io.ReadWriter, shared bool) (ServerInit, error) {
	flag := byte(0)
	if shared {
		flag = 1
	}
	if _, err := rw.Write([]byte{flag}); err != nil {
		return ServerInit{}, err
	}
	return ReadServerInit(rw)
}

// ClientVeNCrypt runs a client's side of the handshake against a VeNCrypt server (the
// gateway): version, security type 19, VeNCrypt 0.2, sub-type X509Plain or X509Vnc, TLS
// with cfg, then the credentials. It returns the TLS connection, ready for ClientInit.
func ClientVeNCrypt(conn net.Conn, cfg *tls.Config, subtype uint32, user, password string) (*tls.Conn, error) {
	if err := clientVersion(conn); err != nil {
		return nil, err
	}
	types, err := readSecurityTypes(conn)
	if err != nil {
		return nil, err
	}
	if !bytes.Contains(types, []byte{SecVeNCrypt}) {
		return nil, fmt.Errorf("server offers security types %v, not VeNCrypt", types)
	}
	if _, err := conn.Write([]byte{SecVeNCrypt}); err != nil {
		return nil, err
	}
	var v [2]byte
	if _, err := io.ReadFull(conn, v[:]); err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{0, 2}); err != nil {
		return nil, err
	}
	var ok [2]byte
	if _, err := io.ReadFull(conn, ok[:]); err != nil {
		return nil, err
	}
	if ok[0] != 0 {
		return nil, errors.New("server refused VeNCrypt 0.2")
	}
	offered := make([]uint32, ok[1])
	if err := binary.Read(conn, binary.BigEndian, offered); err != nil {
		return nil, err
	}
	found := false
	for _, t := range offered {
		found = found || t == subtype
	}
	if !found {
		return nil, fmt.Errorf("server does not offer %s (offers %v)", VeNCryptName(subtype), offered)
	}
	if err := binary.Write(conn, binary.BigEndian, subtype); err != nil {
		return nil, err
	}
	var ack [1]byte
	if _, err := io.ReadFull(conn, ack[:]); err != nil {
		return nil, err
	}
	if ack[0] != 1 {
		return nil, fmt.Errorf("server refused %s", VeNCryptName(subtype))
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS: %w", err)
	}
	switch subtype {
	case VeNCryptX509Plain:
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, [2]uint32{uint32(len(user)), uint32(len(password))})
		b.WriteString(user)
		b.WriteString(password)
		if _, err := tc.Write(b.Bytes()); err != nil {
			return nil, err
		}
	case VeNCryptX509Vnc:
		var ch [16]byte
		if _, err := io.ReadFull(tc, ch[:]); err != nil {
			return nil, err
		}
		resp := VNCResponse(password, ch)
		if _, err := tc.Write(resp[:]); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("sub-type %s is not supported by this client", VeNCryptName(subtype))
	}
	if err := readSecurityResult(tc); err != nil {
		return nil, err
	}
	return tc, nil
}

// VNCResponse is RFB's VNC authentication: the challenge DES-encrypted with the first 8
// bytes of password (zero-padded), each key byte's bits reversed (a quirk of the original
// implementation that every client reproduces). DES ignores each key byte's low bit, so
// after the reversal the high bit of every password byte is ignored.
func VNCResponse(password string, challenge [16]byte) [16]byte {
	var key [8]byte
	copy(key[:], password)
	for i, b := range key {
		var r byte
		for j := 0; j < 8; j++ {
			if b&(1<<j) != 0 {
				r |= 0x80 >> j
			}
		}
		key[i] = r
	}
	c, _ := des.NewCipher(key[:]) // an 8-byte key cannot fail
	var out [16]byte
	c.Encrypt(out[:8], challenge[:8])
	c.Encrypt(out[8:], challenge[8:])
	return out
}
