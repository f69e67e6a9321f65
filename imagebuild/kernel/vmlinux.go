package kernel

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// BzImage header fields (Documentation/arch/x86/boot.rst).
const (
	offSetupSects    = 0x1f1
	offHeaderMagic   = 0x202 // "HdrS"
	offVersion       = 0x206
	offPayloadOffset = 0x248
	offPayloadLength = 0x24c
)

// xzMagic starts an xz stream.
var xzMagic = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}

// ExtractVmlinux returns the uncompressed ELF kernel inside an x86 bzImage whose payload
// is xz-compressed (CONFIG_KERNEL_XZ). qemu boots such an ELF through PVH when it carries
// the Xen PVH entry note (CONFIG_PVH), skipping the decompressor, which is slow under TCG.
func ExtractVmlinux(bz []byte) ([]byte, error) {
	if len(bz) < 0x260 || string(bz[offHeaderMagic:offHeaderMagic+4]) != "HdrS" {
		return nil, errors.New("not an x86 bzImage (no HdrS header)")
	}
	if v := binary.LittleEndian.Uint16(bz[offVersion:]); v < 0x0208 {
		return nil, fmt.Errorf("bzImage boot protocol %#x is older than 2.08 (no payload fields)", v)
	}
	setup := int(bz[offSetupSects])
	if setup == 0 {
		setup = 4
	}
	start := (setup + 1) * 512
	off := int(binary.LittleEndian.Uint32(bz[offPayloadOffset:]))
	n := int(binary.LittleEndian.Uint32(bz[offPayloadLength:]))
	if start+off+n > len(bz) || n < len(xzMagic) {
		return nil, fmt.Errorf("bzImage payload (%d bytes at %d) outside the file (%d bytes)", n, start+off, len(bz))
	}
	payload := bz[start+off : start+off+n]
	if !bytes.HasPrefix(payload, xzMagic) {
		return nil, fmt.Errorf("bzImage payload is not xz-compressed (starts % x); only CONFIG_KERNEL_XZ is supported", payload[:6])
	}
	out, err := DecodeXZ(payload)
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	if !bytes.HasPrefix(out, []byte(elf.ELFMAG)) {
		return nil, errors.New("bzImage payload decompressed to something that is not an ELF file")
	}
	return out, nil
}

// HasPVHNote reports whether the ELF kernel has XEN_ELFNOTE_PHYS32_ENTRY, the note qemu
// needs to boot it directly (PVH).
func HasPVHNote(vmlinux []byte) (bool, error) {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return false, err
	}
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return false, err
		}
		for len(b) >= 12 {
			namesz := int(f.ByteOrder.Uint32(b[0:]))
			descsz := int(f.ByteOrder.Uint32(b[4:]))
			typ := f.ByteOrder.Uint32(b[8:])
			b = b[12:]
			nameEnd := align4(namesz)
			if nameEnd > len(b) {
				break
			}
			name := string(bytes.TrimRight(b[:namesz], "\x00"))
			b = b[nameEnd:]
			descEnd := align4(descsz)
			if descEnd > len(b) {
				break
			}
			b = b[descEnd:]
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return true, nil
			}
		}
	}
	return false, nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// DecodeXZ decodes an xz stream whose blocks use LZMA2, optionally behind the x86 BCJ
// filter (what the kernel's xz_wrap.sh produces). github.com/ulikunitz/xz decodes only
// plain LZMA2 blocks, so the container and BCJ are handled here and LZMA2 by its lzma
// package. Block checks (CRC32, CRC64) are verified. Data after the first stream (the
// kernel appends its size) is ignored.
func DecodeXZ(in []byte) ([]byte, error) {
	if len(in) < 12 || !bytes.HasPrefix(in, xzMagic) {
		return nil, errors.New("xz: bad magic")
	}
	if in[6] != 0 || crc32.ChecksumIEEE(in[6:8]) != binary.LittleEndian.Uint32(in[8:12]) {
		return nil, errors.New("xz: bad stream header")
	}
	check := in[7] & 0x0f
	var checkSize int
	switch check {
	case 0x00:
		checkSize = 0
	case 0x01:
		checkSize = 4
	case 0x04:
		checkSize = 8
	case 0x0a:
		checkSize = 32 // SHA-256: skipped, not verified
	default:
		return nil, fmt.Errorf("xz: unsupported check type %#x", check)
	}
	pos := 12
	var out bytes.Buffer
	for {
		if pos >= len(in) {
			return nil, errors.New("xz: truncated (no index)")
		}
		if in[pos] == 0x00 {
			break // index: all blocks read
		}
		hsize := (int(in[pos]) + 1) * 4
		if pos+hsize > len(in) {
			return nil, errors.New("xz: truncated block header")
		}
		hdr := in[pos : pos+hsize]
		if crc32.ChecksumIEEE(hdr[:hsize-4]) != binary.LittleEndian.Uint32(hdr[hsize-4:]) {
			return nil, errors.New("xz: block header CRC mismatch")
		}
		bcj, bcjStart, dict, err := parseBlockHeader(hdr[:hsize-4])
		if err != nil {
			return nil, err
		}
		pos += hsize
		r := bytes.NewReader(in[pos:])
		lr, err := lzma.Reader2Config{DictCap: dict}.NewReader2(r)
		if err != nil {
			return nil, fmt.Errorf("xz: lzma2: %w", err)
		}
		blockStart := out.Len()
		if _, err := io.Copy(&out, lr); err != nil {
			return nil, fmt.Errorf("xz: lzma2: %w", err)
		}
		consumed := len(in[pos:]) - r.Len()
		pos += align4(consumed)
		block := out.Bytes()[blockStart:]
		if bcj {
			bcjX86Decode(block, bcjStart)
		}
		if pos+checkSize > len(in) {
			return nil, errors.New("xz: truncated block check")
		}
		sum := in[pos : pos+checkSize]
		switch check {
		case 0x01:
			if crc32.ChecksumIEEE(block) != binary.LittleEndian.Uint32(sum) {
				return nil, errors.New("xz: block CRC32 mismatch")
			}
		case 0x04:
			if crc64.Checksum(block, crc64.MakeTable(crc64.ECMA)) != binary.LittleEndian.Uint64(sum) {
				return nil, errors.New("xz: block CRC64 mismatch")
			}
		}
		pos += checkSize
	}
	return out.Bytes(), nil
}

// parseBlockHeader reads a block header (without its CRC): an optional x86 BCJ filter
// followed by LZMA2.
func parseBlockHeader(h []byte) (bcj bool, bcjStart uint32, dict int, err error) {
	if len(h) < 2 {
		return false, 0, 0, errors.New("xz: short block header")
	}
	flags := h[1]
	if flags&0x3c != 0 {
		return false, 0, 0, errors.New("xz: reserved block flags set")
	}
	nfilters := int(flags&3) + 1
	p := 2
	uvarint := func() (uint64, error) {
		v, n := binary.Uvarint(h[p:])
		if n <= 0 {
			return 0, errors.New("xz: bad varint in block header")
		}
		p += n
		return v, nil
	}
	if flags&0x40 != 0 { // compressed size
		if _, err := uvarint(); err != nil {
			return false, 0, 0, err
		}
	}
	if flags&0x80 != 0 { // uncompressed size
		if _, err := uvarint(); err != nil {
			return false, 0, 0, err
		}
	}
	for i := 0; i < nfilters; i++ {
		id, err := uvarint()
		if err != nil {
			return false, 0, 0, err
		}
		psize, err := uvarint()
		if err != nil {
			return false, 0, 0, err
		}
		if p+int(psize) > len(h) {
			return false, 0, 0, errors.New("xz: filter properties beyond block header")
		}
		props := h[p : p+int(psize)]
		p += int(psize)
		last := i == nfilters-1
		switch {
		case id == 0x04 && !last: // x86 BCJ
			bcj = true
			switch len(props) {
			case 0:
			case 4:
				bcjStart = binary.LittleEndian.Uint32(props)
			default:
				return false, 0, 0, errors.New("xz: bad BCJ properties")
			}
		case id == 0x21 && last: // LZMA2
			if len(props) != 1 || props[0] > 40 {
				return false, 0, 0, errors.New("xz: bad LZMA2 properties")
			}
			d := props[0]
			if d == 40 {
				dict = 1<<32 - 1
			} else {
				dict = (2 | int(d&1)) << (d/2 + 11)
			}
		default:
			return false, 0, 0, fmt.Errorf("xz: unsupported filter chain (filter %#x at position %d of %d)", id, i+1, nfilters)
		}
	}
	if dict == 0 {
		return false, 0, 0, errors.New("xz: block without LZMA2 filter")
	}
	return bcj, bcjStart, dict, nil
}

// bcjX86Decode undoes the x86 branch converter in place (a port of xz-embedded's
// bcj_x86, for a whole buffer starting at stream position start).
func bcjX86Decode(buf []byte, start uint32) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	testMSByte := func(b byte) bool { return b == 0x00 || b == 0xff }

	if len(buf) <= 4 {
		return
	}
	size := len(buf) - 4
	prevPos := -1
	var prevMask uint32
	for i := 0; i < size; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskToBitNum[prevMask])]
				if !maskToAllowed[prevMask] || testMSByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if testMSByte(buf[i+4]) {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				dest = src - (start + uint32(i) + 5)
				if prevMask == 0 {
					break
				}
				j := maskToBitNum[prevMask] * 8
				b := byte(dest >> (24 - j))
				if !testMSByte(b) {
					break
				}
				src = dest ^ (1<<(32-j) - 1)
			}
			dest &= 0x01ffffff
			dest |= 0 - (dest & 0x01000000)
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 4
		} else {
			prevMask = prevMask<<1 | 1
		}
	}
}
