// Package disk builds the appliance's raw EFI disk image with go-diskfs: a GPT with
//
//  1. an EFI System Partition (FAT32, label DESKHOST): systemd-boot as the removable-media
//     loader EFI/BOOT/BOOTX64.EFI, one loader entry with the kernel command line, and the
//     kernel and initramfs it loads. (A bare EFI-stub kernel as BOOTX64.EFI would get no
//     command line and no initrd.)
//  2. the persistent data partition, GPT name PermLabel, left blank (zeros): init formats
//     it on the first boot, and only ever formats it while it is blank.
//
// The partition and disk GUIDs and every FAT timestamp derive from the inputs, so the
// same inputs give the same image.
package disk

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/diskfs/go-diskfs/disk"
	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/partition/gpt"
)

// PermLabel is the GPT partition name of /perm; init finds the partition by it.
const PermLabel = "deskhost-perm"

// ESPLabel is the FAT volume label of the EFI System Partition.
const ESPLabel = "DESKHOST"

// Default systemd-boot location (Debian package systemd-boot-efi).
const DefaultSystemdBoot = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"

const sector = 512

// firstLBA leaves 1 MiB before the first partition, as partitioning tools do.
const firstLBA = 2048

// Options of an image.
type Options struct {
	Size        int64  // whole image, bytes (whole MiB)
	ESPSize     int64  // EFI System Partition, bytes (whole MiB)
	Kernel      string // bzImage file
	Initrd      string // initramfs file
	Cmdline     string
	Title       string // the loader entry's title, e.g. "deskhost 0.4"
	SystemdBoot string // systemd-bootx64.efi; default DefaultSystemdBoot
	Time        time.Time
	// Progress, if set, is told each file written to the ESP.
	Progress func(format string, args ...any)
}

// Layout is where the partitions are.
type Layout struct {
	ESPStart, ESPSize   int64 // bytes
	PermStart, PermSize int64
	DiskGUID            string
}

// Build writes the image to out (which must not exist).
func Build(out string, o Options) (*Layout, error) {
	if o.SystemdBoot == "" {
		o.SystemdBoot = DefaultSystemdBoot
	}
	if o.Progress == nil {
		o.Progress = func(string, ...any) {}
	}
	for _, f := range []struct{ what, path string }{{"kernel", o.Kernel}, {"initramfs", o.Initrd}, {"systemd-boot (package systemd-boot-efi)", o.SystemdBoot}} {
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("disk: %s: %w", f.what, err)
		}
	}
	if o.Size%(1<<20) != 0 || o.ESPSize%(1<<20) != 0 {
		return nil, errors.New("disk: size and ESP size must be whole MiB")
	}
	// GPT: primary header + 128 entries at the start, their backup at the end (33
	// sectors each); the last partition ends before the backup.
	espStart := int64(firstLBA)
	espEnd := espStart + o.ESPSize/sector - 1
	permStart := espEnd + 1
	permEnd := o.Size/sector - 34
	if permEnd-permStart < (64<<20)/sector {
		return nil, fmt.Errorf("disk: %d MiB leaves less than 64 MiB for /perm after a %d MiB ESP", o.Size>>20, o.ESPSize>>20)
	}
	seed := sha256.New()
	for _, p := range []string{o.Kernel, o.Initrd, o.SystemdBoot} {
		if err := hashFile(seed, p); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(seed, "%d %d %q", o.Size, o.ESPSize, o.Cmdline)
	sum := seed.Sum(nil)
	guid := func(i byte) string {
		b := sha256.Sum256(append(append([]byte(nil), sum...), i))
		b[6] = b[6]&0x0f | 0x40 // version 4
		b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
		return fmt.Sprintf("%X-%X-%X-%X-%X", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
	}
	lay := &Layout{ESPStart: espStart * sector, ESPSize: (espEnd - espStart + 1) * sector,
		PermStart: permStart * sector, PermSize: (permEnd - permStart + 1) * sector, DiskGUID: guid(0)}

	d, err := diskfs.Create(out, o.Size, diskfs.SectorSize512)
	if err != nil {
		return nil, fmt.Errorf("disk: creating %s: %w", out, err)
	}
	closed := false
	defer func() {
		if !closed {
			d.Close()
		}
	}()
	table := &gpt.Table{
		LogicalSectorSize: sector, PhysicalSectorSize: sector, ProtectiveMBR: true, GUID: lay.DiskGUID,
		Partitions: []*gpt.Partition{
			{Index: 1, Start: uint64(espStart), End: uint64(espEnd), Type: gpt.EFISystemPartition, Name: "EFI System Partition", GUID: guid(1)},
			{Index: 2, Start: uint64(permStart), End: uint64(permEnd), Type: gpt.LinuxFilesystem, Name: PermLabel, GUID: guid(2)},
		},
	}
	if err := d.Partition(table); err != nil {
		return nil, fmt.Errorf("disk: writing the partition table: %w", err)
	}
	if err := writeESP(d, o); err != nil {
		return nil, err
	}
	closed = true
	if err := d.Close(); err != nil {
		return nil, fmt.Errorf("disk: %w", err)
	}
	// go-diskfs stamps directories' "." and ".." entries with the current time.
	if err := normalizeFATTimes(out, lay.ESPStart, o.Time); err != nil {
		return nil, fmt.Errorf("disk: fixing the ESP's timestamps: %w", err)
	}
	return lay, nil
}

// normalizeFATTimes sets every timestamp of every directory entry of the FAT32 file
// system at offset off in the file to t, walking the directory tree from the root.
func normalizeFATTimes(path string, off int64, t time.Time) error {
	if t.IsZero() {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	t = t.UTC()
	if t.Year() < 1980 {
		t = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)
	}
	date := uint16((t.Year()-1980)<<9 | int(t.Month())<<5 | t.Day())
	tod := uint16(t.Hour()<<11 | t.Minute()<<5 | t.Second()/2)
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	bs := make([]byte, 512)
	if _, err := f.ReadAt(bs, off); err != nil {
		return err
	}
	le16 := func(b []byte) uint32 { return uint32(b[0]) | uint32(b[1])<<8 }
	le32 := func(b []byte) uint32 { return le16(b) | le16(b[2:])<<16 }
	bps := int64(le16(bs[11:]))
	spc := int64(bs[13])
	reserved := int64(le16(bs[14:]))
	nfats := int64(bs[16])
	fatSz := int64(le32(bs[36:]))
	root := le32(bs[44:])
	if bps == 0 || spc == 0 || fatSz == 0 {
		return errors.New("not a FAT32 boot sector")
	}
	fatStart := off + reserved*bps
	dataStart := fatStart + nfats*fatSz*bps
	csize := spc * bps
	next := func(c uint32) (uint32, error) {
		b := make([]byte, 4)
		if _, err := f.ReadAt(b, fatStart+int64(c)*4); err != nil {
			return 0, err
		}
		return le32(b) & 0x0fffffff, nil
	}
	put16 := func(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }
	var walk func(c uint32, depth int) error
	walk = func(c uint32, depth int) error {
		if depth > 16 {
			return errors.New("directories nested too deep")
		}
		for n := 0; c >= 2 && c < 0x0ffffff8; n++ {
			if n > 1<<16 {
				return errors.New("directory cluster chain loops")
			}
			buf := make([]byte, csize)
			pos := dataStart + int64(c-2)*csize
			if _, err := f.ReadAt(buf, pos); err != nil {
				return err
			}
			var subdirs []uint32
			for e := 0; e+32 <= len(buf); e += 32 {
				ent := buf[e : e+32]
				if ent[0] == 0 {
					break
				}
				if ent[0] == 0xe5 || ent[11] == 0x0f {
					continue
				}
				ent[13] = 0
				put16(ent[14:], tod)
				put16(ent[16:], date)
				put16(ent[18:], date)
				put16(ent[22:], tod)
				put16(ent[24:], date)
				if ent[11]&0x10 != 0 && ent[0] != '.' {
					subdirs = append(subdirs, le16(ent[20:])<<16|le16(ent[26:]))
				}
			}
			if _, err := f.WriteAt(buf, pos); err != nil {
				return err
			}
			for _, sd := range subdirs {
				if err := walk(sd, depth+1); err != nil {
					return err
				}
			}
			if c, err = next(c); err != nil {
				return err
			}
		}
		return nil
	}
	if err := walk(root, 0); err != nil {
		return err
	}
	return f.Sync()
}

func writeESP(d *disk.Disk, o Options) error {
	fs, err := d.CreateFilesystem(disk.FilesystemSpec{Partition: 1, FSType: filesystem.TypeFat32, VolumeLabel: ESPLabel, Reproducible: true})
	if err != nil {
		return fmt.Errorf("disk: creating the ESP's FAT32: %w", err)
	}
	loaderConf := "# deskhost: boot the one entry at once (a key press during boot shows the menu)\n" +
		"default deskhost.conf\ntimeout 0\neditor no\nconsole-mode keep\n"
	entry := fmt.Sprintf("title   %s\nlinux   /deskhost/vmlinuz\ninitrd  /deskhost/initrd.img\noptions %s\n", o.Title, o.Cmdline)
	files := []struct {
		path string
		src  string
		data []byte
	}{
		{path: "/EFI/BOOT/BOOTX64.EFI", src: o.SystemdBoot},
		{path: "/loader/loader.conf", data: []byte(loaderConf)},
		{path: "/loader/entries/deskhost.conf", data: []byte(entry)},
		{path: "/deskhost/vmlinuz", src: o.Kernel},
		{path: "/deskhost/initrd.img", src: o.Initrd},
	}
	for _, dir := range []string{"/EFI", "/EFI/BOOT", "/loader", "/loader/entries", "/deskhost"} {
		if err := fs.Mkdir(dir); err != nil {
			return fmt.Errorf("disk: ESP: mkdir %s: %w", dir, err)
		}
	}
	for _, f := range files {
		var r io.Reader
		if f.src != "" {
			src, err := os.Open(f.src)
			if err != nil {
				return fmt.Errorf("disk: %w", err)
			}
			defer src.Close()
			r = src
		} else {
			r = bytesReader(f.data)
		}
		o.Progress("ESP %s", f.path)
		w, err := fs.OpenFile(f.path, os.O_CREATE|os.O_RDWR)
		if err != nil {
			return fmt.Errorf("disk: ESP: creating %s: %w", f.path, err)
		}
		// Large writes: go-diskfs allocates clusters per Write call.
		if _, err := io.CopyBuffer(w, r, make([]byte, 4<<20)); err != nil {
			w.Close()
			return fmt.Errorf("disk: ESP: writing %s: %w", f.path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("disk: ESP: closing %s: %w", f.path, err)
		}
	}
	if !o.Time.IsZero() {
		for _, f := range files {
			for p := f.path; p != "/"; p = path.Dir(p) {
				_ = fs.Chtimes(p, o.Time, o.Time, o.Time)
			}
		}
	}
	return nil
}

type byteReader struct {
	b []byte
	i int
}

func (r *byteReader) Read(p []byte) (int, error) {
	if r.i >= len(r.b) {
		return 0, io.EOF
	}
	n := copy(p, r.b[r.i:])
	r.i += n
	return n, nil
}

func bytesReader(b []byte) io.Reader { return &byteReader{b: b} }

func hashFile(h io.Writer, p string) error {
	f, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer f.Close()
	_, err = io.Copy(h, f)
	return err
}
