package rfb

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"io"
)

// Client-to-server message types used by the reference client.
const (
	msgSetPixelFormat           = 0
	msgSetEncodings             = 2
	msgFramebufferUpdateRequest = 3
)

// Server-to-client message types.
const (
	msgFramebufferUpdate   = 0
	msgSetColourMapEntries = 1
	msgBell                = 2
	msgServerCutText       = 3
)

// EncodingRaw is the only encoding the reference client asks for.
const EncodingRaw = 0

// RGB32 is 32-bit little-endian true colour, red in bits 16–23.
var RGB32 = PixelFormat{BitsPerPixel: 32, Depth: 24, TrueColour: 1, RedMax: 255, GreenMax: 255, BlueMax: 255, RedShift: 16, GreenShift: 8, BlueShift: 0}

// RequestRawFrame asks for the whole w×h framebuffer in RGB32, raw encoding.
func RequestRawFrame(w io.Writer, width, height uint16, incremental bool) error {
	var b bytes.Buffer
	b.Write([]byte{msgSetPixelFormat, 0, 0, 0})
	binary.Write(&b, binary.BigEndian, RGB32)
	b.Write([]byte{msgSetEncodings, 0})
	binary.Write(&b, binary.BigEndian, uint16(1))
	binary.Write(&b, binary.BigEndian, int32(EncodingRaw))
	WriteUpdateRequest(&b, incremental, 0, 0, width, height)
	_, err := w.Write(b.Bytes())
	return err
}

// WriteUpdateRequest writes a FramebufferUpdateRequest.
func WriteUpdateRequest(w io.Writer, incremental bool, x, y, width, height uint16) error {
	inc := byte(0)
	if incremental {
		inc = 1
	}
	var b [10]byte
	b[0], b[1] = msgFramebufferUpdateRequest, inc
	binary.BigEndian.PutUint16(b[2:], x)
	binary.BigEndian.PutUint16(b[4:], y)
	binary.BigEndian.PutUint16(b[6:], width)
	binary.BigEndian.PutUint16(b[8:], height)
	_, err := w.Write(b[:])
	return err
}

// ReadUpdate reads server messages until one FramebufferUpdate has been applied to img
// (raw rectangles in RGB32; other server messages are skipped). It returns the number of
// pixel bytes received.
func ReadUpdate(r io.Reader, img *image.RGBA) (int, error) {
	for {
		var t [1]byte
		if _, err := io.ReadFull(r, t[:]); err != nil {
			return 0, err
		}
		switch t[0] {
		case msgFramebufferUpdate:
			return readRects(r, img)
		case msgSetColourMapEntries:
			var h struct {
				Pad   uint8
				First uint16
				N     uint16
			}
			if err := binary.Read(r, binary.BigEndian, &h); err != nil {
				return 0, err
			}
			if _, err := io.CopyN(io.Discard, r, int64(h.N)*6); err != nil {
				return 0, err
			}
		case msgBell:
		case msgServerCutText:
			var pad [3]byte
			if _, err := io.ReadFull(r, pad[:]); err != nil {
				return 0, err
			}
			if _, err := readString(r, 1<<20); err != nil {
				return 0, err
			}
		default:
			return 0, fmt.Errorf("unexpected server message type %d", t[0])
		}
	}
}

func readRects(r io.Reader, img *image.RGBA) (int, error) {
	var h struct {
		Pad uint8
		N   uint16
	}
	if err := binary.Read(r, binary.BigEndian, &h); err != nil {
		return 0, err
	}
	total := 0
	for i := 0; i < int(h.N); i++ {
		var rect struct {
			X, Y, W, H uint16
			Enc        int32
		}
		if err := binary.Read(r, binary.BigEndian, &rect); err != nil {
			return total, err
		}
		if rect.Enc != EncodingRaw {
			return total, fmt.Errorf("rectangle in encoding %d; only raw was asked for", rect.Enc)
		}
		row := make([]byte, int(rect.W)*4)
		for y := 0; y < int(rect.H); y++ {
			if _, err := io.ReadFull(r, row); err != nil {
				return total, err
			}
			total += len(row)
			for x := 0; x < int(rect.W); x++ {
				p := row[x*4:]
				img.SetRGBA(int(rect.X)+x, int(rect.Y)+y, color.RGBA{R: p[2], G: p[1], B: p[0], A: 255})
			}
		}
	}
	return total, nil
}

// Colours counts the distinct colours of img (up to max): a blank frame has one.
func Colours(img image.Image, max int) int {
	seen := map[color.RGBA]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			r, g, bl, a := img.At(x, y).RGBA()
			seen[color.RGBA{uint8(r >> 8), uint8(g >> 8), uint8(bl >> 8), uint8(a >> 8)}] = true
			if len(seen) >= max {
				return len(seen)
			}
		}
	}
	return len(seen)
}
