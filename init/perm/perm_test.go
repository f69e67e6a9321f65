package perm

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	dir := t.TempDir()
	blank := filepath.Join(dir, "blank")
	os.WriteFile(blank, make([]byte, 4<<20), 0o600)
	ext := make([]byte, 2<<20)
	ext[1024+56], ext[1024+57] = 0x53, 0xEF
	extf := filepath.Join(dir, "ext")
	os.WriteFile(extf, ext, 0o600)
	// Data deep in the first MiB (as LVM or btrfs put their signatures) is not blank.
	other := make([]byte, 2<<20)
	other[64<<10] = 1
	otherf := filepath.Join(dir, "other")
	os.WriteFile(otherf, other, 0o600)
	for f, want := range map[string]Kind{blank: Blank, extf: Ext4, otherf: Other} {
		if k, err := Classify(f); err != nil || k != want {
			t.Errorf("%s: %v %v, want %v", filepath.Base(f), k, err, want)
		}
	}
	if k, err := Classify(filepath.Join(dir, "none")); err == nil || k != Other {
		t.Errorf("missing device: %v %v", k, err)
	}
	// Wipe makes a device blank again (the factory reset).
	if err := Wipe(extf); err != nil {
		t.Fatal(err)
	}
	if k, _ := Classify(extf); k != Blank {
		t.Errorf("after Wipe: %v", k)
	}
}

func TestFindByLabel(t *testing.T) {
	sys := t.TempDir()
	for name, uevent := range map[string]string{
		"vda":  "MAJOR=254\nMINOR=0\nDEVNAME=vda\nDEVTYPE=disk\n",
		"vda1": "MAJOR=254\nMINOR=1\nDEVNAME=vda1\nDEVTYPE=partition\nPARTN=1\nPARTNAME=EFI System Partition\n",
		"vda2": "MAJOR=254\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nPARTN=2\nPARTNAME=deskhost-perm\n",
	} {
		d := filepath.Join(sys, "class", "block", name)
		os.MkdirAll(d, 0o755)
		os.WriteFile(filepath.Join(d, "uevent"), []byte(uevent), 0o644)
	}
	if dev, err := Find(sys, "/dev", "", "deskhost-perm", 0); err != nil || dev != "/dev/vda2" {
		t.Errorf("by label: %q %v", dev, err)
	}
	if dev, err := Find(sys, "/dev", "PARTLABEL=EFI System Partition", "x", 0); err != nil || dev != "/dev/vda1" {
		t.Errorf("PARTLABEL=: %q %v", dev, err)
	}
	start := time.Now()
	if _, err := Find(sys, "/dev", "", "nothere", 300*time.Millisecond); err == nil || time.Since(start) < 300*time.Millisecond {
		t.Errorf("missing label: %v after %v", err, time.Since(start))
	}
	f := filepath.Join(t.TempDir(), "disk")
	os.WriteFile(f, nil, 0o600)
	if dev, err := Find(sys, "/dev", f, "x", 0); err != nil || dev != f {
		t.Errorf("explicit device: %q %v", dev, err)
	}
}
