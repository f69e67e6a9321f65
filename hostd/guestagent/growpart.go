package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"
	"golang.org/x/sys/unix"
)

// A root filesystem in a partition (an imported cloud image's) grows in two steps before
// its filesystem does, as cloud-utils' growpart does it:
//  1. the partition's table entry is extended to the disk's end (go-diskfs rewrites the MBR
//     entry, or the GPT entry with both GPT headers, the backup moved to the new last
//     sector);
//  2. the kernel is told the partition's new length with BLKPG_RESIZE_PARTITION, which
//     resizes a partition in use, mounted or not.
// Only the disk's last partition can grow: one after it would be overwritten.

// sectorBytes is the unit of sysfs sizes and of the tables hostd's virtio disks carry.
const sectorBytes = 512

// part is a partition as sysfs shows it (512-byte sectors).
type part struct {
	disk    string // the disk's name, "vda"
	number  int    // 1 for vda1
	start   uint64 // first sector
	sectors uint64
}

// partitionOf is dev's partition, or nil when dev is a whole disk. sysClassBlock is
// /sys/class/block.
func partitionOf(sysClassBlock, dev string) (*part, error) {
	name := filepath.Base(dev)
	dir := filepath.Join(sysClassBlock, name)
	num, err := os.ReadFile(filepath.Join(dir, "partition"))
	if errors.Is(err, os.ErrNotExist) {
		if _, serr := os.Stat(dir); serr != nil {
			return nil, fmt.Errorf("%s is not a block device: %w", dev, serr)
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	real, err := filepath.EvalSymlinks(dir) // .../block/vda/vda1
	if err != nil {
		return nil, err
	}
	p := &part{disk: filepath.Base(filepath.Dir(real))}
	if p.number, err = strconv.Atoi(strings.TrimSpace(string(num))); err != nil {
		return nil, fmt.Errorf("partition number of %s: %w", dev, err)
	}
	if p.start, err = sysfsUint(filepath.Join(dir, "start")); err != nil {
		return nil, err
	}
	if p.sectors, err = sysfsUint(filepath.Join(dir, "size")); err != nil {
		return nil, err
	}
	return p, nil
}

func sysfsUint(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// growPartitionTable extends the table entry of the partition starting at sector start
// to the end of a diskBytes disk, and returns its new length in sectors. A partition
// already filling the disk is left as it is (the call is idempotent).
func growPartitionTable(f *os.File, diskBytes, start uint64) (sectors uint64, err error) {
	st := file.New(f, false)
	w, err := st.Writable()
	if err != nil {
		return 0, err
	}
	table, err := partition.Read(st, sectorBytes, sectorBytes)
	if err != nil {
		return 0, fmt.Errorf("read the partition table: %w", err)
	}
	diskSectors := diskBytes / sectorBytes
	switch t := table.(type) {
	case *gpt.Table:
		var p *gpt.Partition
		for _, e := range t.Partitions {
			if e.Type == gpt.Unused {
				continue
			}
			if e.Start == start {
				p = e
			} else if e.Start > start {
				return 0, fmt.Errorf("GPT partition %d (sector %d) follows the one at sector %d: it cannot grow", e.Index, e.Start, start)
			}
		}
		if p == nil {
			return 0, fmt.Errorf("no GPT partition starts at sector %d", start)
		}
		t.Resize(diskSectors * sectorBytes) // the backup header and array move to the end
		end := t.LastDataSector()
		if end < p.End {
			return 0, fmt.Errorf("GPT partition %d ends at sector %d, past the disk's last usable sector %d", p.Index, p.End, end)
		}
		if end == p.End {
			return p.End - p.Start + 1, nil
		}
		p.End, p.Size = end, (end-p.Start+1)*sectorBytes
		if err := t.Write(w, int64(diskSectors*sectorBytes)); err != nil {
			return 0, fmt.Errorf("write the GPT: %w", err)
		}
		return end - p.Start + 1, nil
	case *mbr.Table:
		var p *mbr.Partition
		for _, e := range t.Partitions {
			if e.Type == mbr.Empty {
				continue
			}
			if uint64(e.Start) == start {
				p = e
			} else if uint64(e.Start) > start {
				return 0, fmt.Errorf("MBR partition at sector %d follows the one at sector %d: it cannot grow", e.Start, start)
			}
		}
		if p == nil {
			return 0, fmt.Errorf("no MBR partition starts at sector %d", start)
		}
		if p.Type == mbr.ExtendedCHS || p.Type == mbr.ExtendedLBA {
			return 0, errors.New("the partition is an extended one; only primary partitions grow")
		}
		// An MBR entry counts at most 2^32-1 sectors (2 TiB): beyond, the disk stays unused.
		want := min(diskSectors-start, math.MaxUint32)
		if want < uint64(p.Size) {
			return 0, fmt.Errorf("MBR partition at sector %d is %d sectors, more than the disk's %d after it", start, p.Size, want)
		}
		if want == uint64(p.Size) {
			return want, nil
		}
		p.Size = uint32(want)
		if err := t.Write(w, int64(diskBytes)); err != nil {
			return 0, fmt.Errorf("write the MBR: %w", err)
		}
		if err := f.Sync(); err != nil {
			return 0, fmt.Errorf("write the MBR: %w", err)
		}
		return want, nil
	}
	return 0, fmt.Errorf("partition table of type %s: only MBR and GPT grow", table.Type())
}

// growPartition grows p to fill its disk: its table entry, then the kernel's view.
func growPartition(devDir string, p *part, diskBytes uint64) (sectors uint64, err error) {
	disk := filepath.Join(devDir, p.disk)
	f, err := os.OpenFile(disk, os.O_RDWR, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	if sectors, err = growPartitionTable(f, diskBytes, p.start); err != nil {
		return 0, fmt.Errorf("%s: %w", disk, err)
	}
	if sectors == p.sectors {
		return sectors, nil
	}
	bp := unix.BlkpgPartition{Start: int64(p.start * sectorBytes), Length: int64(sectors * sectorBytes), Pno: int32(p.number)}
	arg := unix.BlkpgIoctlArg{Op: unix.BLKPG_RESIZE_PARTITION, Datalen: int32(unsafe.Sizeof(bp)), Data: (*byte)(unsafe.Pointer(&bp))}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.BLKPG, uintptr(unsafe.Pointer(&arg))); e != 0 {
		return 0, fmt.Errorf("%s: tell the kernel partition %d is now %d sectors: %w", disk, p.number, sectors, e)
	}
	return sectors, nil
}
