package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"deskhost/internal/testenv"
)

const mib = 1 << 20

// sfdiskTable is the table as util-linux's sfdisk reads it: a reader written by others.
type sfdiskTable struct {
	PartitionTable struct {
		Label      string `json:"label"`
		LastLBA    uint64 `json:"lastlba"`
		Partitions []struct {
			Node  string `json:"node"`
			Start uint64 `json:"start"`
			Size  uint64 `json:"size"`
			UUID  string `json:"uuid"`
		} `json:"partitions"`
	} `json:"partitiontable"`
}

func sfdisk(t *testing.T, disk string) sfdiskTable {
	t.Helper()
	if _, err := exec.LookPath("sfdisk"); err != nil {
		testenv.Missing(t, "sfdisk (Debian package fdisk) is not installed")
	}
	out, err := exec.Command("sfdisk", "--json", disk).Output()
	if err != nil {
		t.Fatalf("sfdisk --json %s: %v", disk, err)
	}
	var st sfdiskTable
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatal(err)
	}
	// --verify reads both GPT headers and says when the backup is not at the disk's end.
	if out, err := exec.Command("sfdisk", "--verify", disk).CombinedOutput(); err != nil || bytes.Contains(out, []byte("not on the end")) {
		t.Fatalf("sfdisk --verify %s: %v\n%s", disk, err, out)
	}
	return st
}

func diskFile(t *testing.T, size int64) (*os.File, string) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return f, p
}

// A GPT laid out as Debian's cloud images are (BIOS boot 14 and EFI 15 before root 1):
// after the disk grows, root's entry reaches the new last usable sector, the backup
// header and array move to the disk's end, the other entries keep their numbers and
// GUIDs, and sfdisk reads it all back. A second call changes nothing.
func TestGrowPartitionTableGPT(t *testing.T) {
	f, path := diskFile(t, 64*mib)
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 14, Start: 2048, End: 4095, Type: gpt.BIOSBoot, Name: "bios"},
		{Index: 15, Start: 4096, End: 8191, Type: gpt.EFISystemPartition, Name: "efi"},
		{Index: 1, Start: 8192, End: 32767, Type: gpt.LinuxFilesystem, Name: "root"},
	}}
	st := file.New(f, false)
	w, _ := st.Writable()
	if err := tbl.Write(w, 64*mib); err != nil {
		t.Fatal(err)
	}
	before := sfdisk(t, path)
	if err := f.Truncate(256 * mib); err != nil {
		t.Fatal(err)
	}
	sectors, err := growPartitionTable(f, 256*mib, 8192)
	if err != nil {
		t.Fatal(err)
	}
	lastUsable := uint64(256*mib/512 - 34) // 33 sectors of backup (array + header) after it
	if want := lastUsable - 8192 + 1; sectors != want {
		t.Errorf("root is %d sectors, want %d (to the last usable sector %d)", sectors, want, lastUsable)
	}
	after := sfdisk(t, path)
	if after.PartitionTable.LastLBA != lastUsable {
		t.Errorf("sfdisk: last usable sector %d, want %d", after.PartitionTable.LastLBA, lastUsable)
	}
	if len(after.PartitionTable.Partitions) != 3 {
		t.Fatalf("sfdisk reads %d partitions: %+v", len(after.PartitionTable.Partitions), after.PartitionTable)
	}
	for i, p := range after.PartitionTable.Partitions {
		b := before.PartitionTable.Partitions[i]
		if p.Node != b.Node || p.Start != b.Start || p.UUID != b.UUID {
			t.Errorf("partition %s (%d, %s) became %s (%d, %s)", b.Node, b.Start, b.UUID, p.Node, p.Start, p.UUID)
		}
		switch {
		case strings.HasSuffix(p.Node, "1") && p.Size != sectors:
			t.Errorf("sfdisk: root is %d sectors, want %d", p.Size, sectors)
		case !strings.HasSuffix(p.Node, "1") && p.Size != b.Size:
			t.Errorf("sfdisk: %s changed size %d → %d", p.Node, b.Size, p.Size)
		}
	}
	again, err := growPartitionTable(f, 256*mib, 8192)
	if err != nil || again != sectors {
		t.Errorf("second growth: %d %v, want %d unchanged", again, err, sectors)
	}
}

// A partition followed by another cannot grow: refused, with the table untouched.
func TestGrowPartitionTableRefusesAMiddlePartition(t *testing.T) {
	f, path := diskFile(t, 64*mib)
	tbl := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
		{Index: 1, Start: 2048, End: 16383, Type: gpt.LinuxFilesystem},
		{Index: 2, Start: 16384, End: 32767, Type: gpt.LinuxSwap},
	}}
	st := file.New(f, false)
	w, _ := st.Writable()
	if err := tbl.Write(w, 64*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(128 * mib); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(path)
	_, err := growPartitionTable(f, 128*mib, 2048)
	if err == nil || !strings.Contains(err.Error(), "GPT partition 2 (sector 16384) follows the one at sector 2048: it cannot grow") {
		t.Errorf("growing partition 1 with 2 after it: %v", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Error("the refused growth changed the disk")
	}
	if _, err := growPartitionTable(f, 128*mib, 40000); err == nil || !strings.Contains(err.Error(), "no GPT partition starts at sector 40000") {
		t.Errorf("a start no partition has: %v", err)
	}
}

// MBR, as partitioned raw images and TestImportOwnKernel's disk have: partition 1's
// sector count reaches the disk's end; past 2 TiB an MBR entry stops at 2^32-1 sectors.
func TestGrowPartitionTableMBR(t *testing.T) {
	f, path := diskFile(t, 64*mib)
	tbl := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{
		{Bootable: true, Type: mbr.Linux, Start: 2048, Size: 30720},
	}}
	st := file.New(f, false)
	w, _ := st.Writable()
	if err := tbl.Write(w, 64*mib); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 * mib); err != nil {
		t.Fatal(err)
	}
	sectors, err := growPartitionTable(f, 256*mib, 2048)
	if want := uint64(256*mib/512 - 2048); err != nil || sectors != want {
		t.Fatalf("grown to %d sectors (%v), want %d", sectors, err, want)
	}
	got := sfdisk(t, path)
	if p := got.PartitionTable.Partitions; got.PartitionTable.Label != "dos" || len(p) != 1 || p[0].Start != 2048 || p[0].Size != sectors {
		t.Errorf("sfdisk reads %+v", got.PartitionTable)
	}
	if err := f.Truncate(3 << 40); err != nil { // sparse
		t.Fatal(err)
	}
	if sectors, err = growPartitionTable(f, 3<<40, 2048); err != nil || sectors != 1<<32-1 {
		t.Errorf("on a 3 TiB disk: %d sectors (%v), want 2^32-1", sectors, err)
	}
}

// partitionOf reads sysfs: a partition's disk, number, start and size; nil for a disk.
func TestPartitionOf(t *testing.T) {
	sys := t.TempDir()
	devices := filepath.Join(sys, "devices", "vda")
	for name, files := range map[string]map[string]string{
		devices:                        {"size": "167772160\n"},
		filepath.Join(devices, "vda1"): {"size": "3141632\n", "start": "2048\n", "partition": "1\n"},
	} {
		if err := os.MkdirAll(name, 0o755); err != nil {
			t.Fatal(err)
		}
		for f, v := range files {
			if err := os.WriteFile(filepath.Join(name, f), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	class := filepath.Join(sys, "class", "block")
	if err := os.MkdirAll(class, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, l := range [][2]string{{devices, "vda"}, {filepath.Join(devices, "vda1"), "vda1"}} {
		if err := os.Symlink(l[0], filepath.Join(class, l[1])); err != nil {
			t.Fatal(err)
		}
	}
	p, err := partitionOf(class, "/dev/vda1")
	if err != nil || p == nil || *p != (part{disk: "vda", number: 1, start: 2048, sectors: 3141632}) {
		t.Errorf("vda1: %+v %v", p, err)
	}
	if p, err := partitionOf(class, "/dev/vda"); err != nil || p != nil {
		t.Errorf("vda (a disk): %+v %v", p, err)
	}
	if _, err := partitionOf(class, "/dev/vdz"); err == nil || !strings.Contains(err.Error(), "/dev/vdz is not a block device") {
		t.Errorf("vdz: %v", err)
	}
}
