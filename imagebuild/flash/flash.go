// Package flash writes a disk image onto a block device and proves it arrived: every
// byte is written (zeros too, so no old file system survives in the image's blank /perm),
// synced, the device's cache is dropped, and the device is read back and its sha256
// compared with the image's. It refuses a device that is mounted, in use (opened
// exclusively by the kernel: a mounted partition, a RAID or LVM member) or smaller than
// the image.
package flash

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Progress is told how far a phase ("write", "verify") got.
type Progress func(phase string, done, total int64, elapsed time.Duration)

// Result of a flash.
type Result struct {
	Bytes  int64
	SHA256 string
	Write  time.Duration
	Verify time.Duration
}

// Flash writes image to device. Cancelling ctx stops it between chunks (the device then
// holds part of the image and fails verification until flashed again).
func Flash(ctx context.Context, image, device string, progress Progress) (*Result, error) {
	if progress == nil {
		progress = func(string, int64, int64, time.Duration) {}
	}
	img, err := os.Open(image)
	if err != nil {
		return nil, fmt.Errorf("flash: image: %w", err)
	}
	defer img.Close()
	ist, err := img.Stat()
	if err != nil {
		return nil, fmt.Errorf("flash: image: %w", err)
	}
	if !ist.Mode().IsRegular() || ist.Size() == 0 {
		return nil, fmt.Errorf("flash: image %s is not a regular, non-empty file", image)
	}
	dst, err := filepath.EvalSymlinks(device)
	if err != nil {
		return nil, fmt.Errorf("flash: device: %w", err)
	}
	dst2, err := os.Stat(dst)
	if err != nil {
		return nil, fmt.Errorf("flash: device: %w", err)
	}
	if dst2.Mode()&os.ModeDevice == 0 || dst2.Mode()&os.ModeCharDevice != 0 {
		return nil, fmt.Errorf("flash: %s is not a block device", device)
	}
	if m, err := mountedFrom(dst); err != nil {
		return nil, err
	} else if m != "" {
		return nil, fmt.Errorf("flash: %s is mounted (%s): unmount it first", device, m)
	}
	// O_EXCL on a block device: the kernel refuses while anything holds it (a mounted
	// file system, device-mapper, md), which the mount table alone would miss.
	dev, err := os.OpenFile(dst, os.O_RDWR|unix.O_EXCL, 0)
	if err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("flash: %s is in use (mounted, or part of RAID/LVM): %w", device, err)
		}
		return nil, fmt.Errorf("flash: %w", err)
	}
	defer dev.Close()
	size, err := unix.IoctlGetUint64(int(dev.Fd()), unix.BLKGETSIZE64)
	if err != nil {
		return nil, fmt.Errorf("flash: size of %s: %w", device, err)
	}
	if int64(size) < ist.Size() {
		return nil, fmt.Errorf("flash: %s holds %d bytes, smaller than the image's %d", device, size, ist.Size())
	}

	res := &Result{Bytes: ist.Size()}
	h := sha256.New()
	start := time.Now()
	buf := make([]byte, 4<<20)
	var done int64
	last := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("flash: interrupted after %d of %d bytes: %w", done, res.Bytes, err)
		}
		n, rerr := io.ReadFull(img, buf)
		if n > 0 {
			h.Write(buf[:n])
			if _, err := dev.Write(buf[:n]); err != nil {
				return nil, fmt.Errorf("flash: writing %s at byte %d: %w", device, done, err)
			}
			done += int64(n)
			if time.Since(last) > 500*time.Millisecond {
				progress("write", done, res.Bytes, time.Since(start))
				last = time.Now()
			}
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("flash: reading the image: %w", rerr)
		}
	}
	if err := dev.Sync(); err != nil {
		return nil, fmt.Errorf("flash: syncing %s: %w", device, err)
	}
	progress("write", done, res.Bytes, time.Since(start))
	res.Write = time.Since(start)
	res.SHA256 = hex.EncodeToString(h.Sum(nil))

	// Read back from the device, not the page cache.
	_ = unix.IoctlSetInt(int(dev.Fd()), unix.BLKFLSBUF, 0)
	_ = unix.Fadvise(int(dev.Fd()), 0, 0, unix.FADV_DONTNEED)
	if _, err := dev.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	vh := sha256.New()
	start = time.Now()
	last = time.Now()
	var read int64
	for read < res.Bytes {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("flash: verification interrupted: %w", err)
		}
		want := int64(len(buf))
		if res.Bytes-read < want {
			want = res.Bytes - read
		}
		n, err := io.ReadFull(dev, buf[:want])
		vh.Write(buf[:n])
		read += int64(n)
		if err != nil {
			return nil, fmt.Errorf("flash: reading %s back at byte %d: %w", device, read, err)
		}
		if time.Since(last) > 500*time.Millisecond {
			progress("verify", read, res.Bytes, time.Since(start))
			last = time.Now()
		}
	}
	progress("verify", read, res.Bytes, time.Since(start))
	res.Verify = time.Since(start)
	if got := hex.EncodeToString(vh.Sum(nil)); got != res.SHA256 {
		return nil, fmt.Errorf("flash: VERIFY FAILED: %s reads back sha256 %s, the image is %s", device, got, res.SHA256)
	}
	return res, nil
}

// mountedFrom returns a mount of dev or of one of its partitions, or "".
func mountedFrom(dev string) (string, error) {
	var st unix.Stat_t
	if err := unix.Stat(dev, &st); err != nil {
		return "", fmt.Errorf("flash: %w", err)
	}
	major, minor := unix.Major(st.Rdev), unix.Minor(st.Rdev)
	// The device and its partitions, by major:minor (sysfs lists the partitions).
	ids := map[string]bool{fmt.Sprintf("%d:%d", major, minor): true}
	base := filepath.Base(dev)
	if ents, err := os.ReadDir("/sys/class/block/" + base); err == nil {
		for _, e := range ents {
			if b, err := os.ReadFile("/sys/class/block/" + base + "/" + e.Name() + "/dev"); err == nil {
				ids[strings.TrimSpace(string(b))] = true
			}
		}
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("flash: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fl := strings.Fields(sc.Text())
		if len(fl) > 4 && ids[fl[2]] {
			return "on " + fl[4], nil
		}
	}
	return "", sc.Err()
}
