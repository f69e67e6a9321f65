package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// Online growth of a volume's filesystem (grow-fs): hostd grows the disk (libvirt's block
// resize, the guest running); the kernel's virtio-blk driver sees the new capacity; the
// agent then grows the mounted ext4 filesystem to fill it with EXT4_IOC_RESIZE_FS, the
// ioctl resize2fs itself uses for a mounted filesystem (so the image needs no resize2fs).

// ext4IocResizeFS is EXT4_IOC_RESIZE_FS, _IOW('f', 16, __u64) (linux/ext4.h).
const ext4IocResizeFS = 0x40086610

// volumeDir is where volume is mounted: as PID 1 the root volume is on /sysroot, as a
// service it is "/".
func (g *guest) volumeDir(volume string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch volume {
	case agent.VolumeRoot:
		if g.service {
			return g.fsPrefix + "/", g.rootMounted
		}
		return g.fsPrefix + agent.RootMount, g.rootMounted
	case agent.VolumeUser:
		return g.fsPrefix + agent.HomeMount, g.homeMounted
	}
	return "", false
}

// fsBytes is the size of volume's mounted filesystem, 0 if it is not mounted.
func (g *guest) fsBytes(volume string) uint64 {
	dir, ok := g.volumeDir(volume)
	if !ok {
		return 0
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0
	}
	return st.Blocks * uint64(st.Bsize)
}

// growFS grows volume's filesystem to fill its disk once the disk has at least minBytes.
func (g *guest) growFS(volume string, minBytes uint64) (fsBytes, diskBytes uint64, err error) {
	dir, ok := g.volumeDir(volume)
	if !ok {
		return 0, 0, fmt.Errorf("grow-fs: the %s volume is not mounted", volume)
	}
	dev, fstype, err := mountSource("/proc/self/mountinfo", dir)
	if err != nil {
		return 0, 0, fmt.Errorf("grow-fs: %w", err)
	}
	if fstype != "ext4" {
		return 0, 0, fmt.Errorf("grow-fs: %s on %s is %s; only ext4 grows online", dev, dir, fstype)
	}
	if real, err := filepath.EvalSymlinks(dev); err == nil { // /dev/disk/by-uuid/... as mounted by an initramfs
		dev = real
	}
	// A filesystem in a partition (growpart.go): the disk grows, then the partition.
	p, err := partitionOf("/sys/class/block", dev)
	if err != nil {
		return 0, 0, fmt.Errorf("grow-fs: %w", err)
	}
	disk := dev
	if p != nil {
		disk = devPath(p.disk)
	}
	deadline := time.Now().Add(agent.GrowDiskWait)
	for {
		if diskBytes, err = blockDeviceBytes(disk); err != nil {
			return 0, 0, fmt.Errorf("grow-fs: %w", err)
		}
		if diskBytes >= minBytes {
			break
		}
		if time.Now().After(deadline) {
			return 0, 0, fmt.Errorf("grow-fs: %s is %d bytes after %s; hostd asked for at least %d", disk, diskBytes, agent.GrowDiskWait, minBytes)
		}
		time.Sleep(50 * time.Millisecond)
	}
	fsDevBytes := diskBytes
	if p != nil {
		sectors, err := growPartition("/dev", p, diskBytes)
		if err != nil {
			return 0, diskBytes, fmt.Errorf("grow-fs: grow partition %d of %s: %w", p.number, disk, err)
		}
		if sectors != p.sectors {
			g.log.Printf("grow-fs: %s grew from %d to %d sectors", dev, p.sectors, sectors)
		}
		fsDevBytes = sectors * sectorBytes
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("grow-fs: statfs %s: %w", dir, err)
	}
	start := time.Now()
	blocks := fsDevBytes / uint64(st.Bsize)
	f, err := os.Open(dir)
	if err != nil {
		return 0, 0, fmt.Errorf("grow-fs: %w", err)
	}
	defer f.Close()
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), ext4IocResizeFS, uintptr(unsafe.Pointer(&blocks))); e != 0 {
		return 0, diskBytes, fmt.Errorf("grow-fs: resize %s on %s to %d blocks of %d bytes: %w", dev, dir, blocks, st.Bsize, e)
	}
	fsBytes = g.fsBytes(volume)
	g.log.Printf("grow-fs: %s (%s on %s) now %d bytes of a %d byte disk, in %v", volume, dev, dir, fsBytes, diskBytes, time.Since(start).Round(time.Millisecond))
	return fsBytes, diskBytes, nil
}

// mountSource finds the device and filesystem type mounted on dir in a mountinfo file.
func mountSource(mountinfo, dir string) (dev, fstype string, err error) {
	f, err := os.Open(mountinfo)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw"
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fs, ps := strings.Fields(pre), strings.Fields(post)
		if ok && len(fs) >= 5 && len(ps) >= 2 && fs[4] == dir {
			dev, fstype = ps[1], ps[0] // the last mount on dir wins
		}
	}
	if dev == "" {
		return "", "", fmt.Errorf("nothing is mounted on %s", dir)
	}
	return dev, fstype, sc.Err()
}

// blockDeviceBytes is a block device's size, as the kernel sees it now (sysfs: 512-byte
// sectors).
func blockDeviceBytes(dev string) (uint64, error) {
	if dev == "/dev/root" {
		return 0, errors.New("the root device is /dev/root; its disk is unknown")
	}
	n, err := sysfsUint(filepath.Join("/sys/class/block", filepath.Base(dev), "size"))
	return n * sectorBytes, err
}
