package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"deskhost/hostd/agent"

	"golang.org/x/sys/unix"
)

// How long the agent waits for the virtio disks to show up in /sys/block.
const diskTimeout = 30 * time.Second

// disk is a virtio block device as seen in /sys/block.
type disk struct {
	name   string // vda
	serial string // virtio-blk serial (libvirt <serial>), may be empty
}

// listDisks returns the virtio disks (vd*) in /sys/block, sorted by name.
func listDisks(sysBlock string) []disk {
	ents, _ := os.ReadDir(sysBlock)
	var ds []disk
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "vd") {
			continue
		}
		s, _ := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
		ds = append(ds, disk{name: e.Name(), serial: strings.TrimSpace(string(s))})
	}
	sort.Slice(ds, func(i, j int) bool {
		// vda < vdb < ... < vdz < vdaa
		if len(ds[i].name) != len(ds[j].name) {
			return len(ds[i].name) < len(ds[j].name)
		}
		return ds[i].name < ds[j].name
	})
	return ds
}

// pickVolumes chooses the root and user volume. A disk whose serial is "root" (or
// "deskhost-root") is the root volume, one whose serial is "home"/"user" (or with the
// "deskhost-" prefix) the user volume; otherwise the first disk is root and the second
// the user volume.
func pickVolumes(ds []disk) (root, home string) {
	var rest []string
	for _, d := range ds {
		switch strings.TrimPrefix(d.serial, "deskhost-") {
		case "root":
			if root == "" {
				root = d.name
				continue
			}
		case "home", "user":
			if home == "" {
				home = d.name
				continue
			}
		}
		rest = append(rest, d.name)
	}
	for _, n := range rest {
		if root == "" {
			root = n
		} else if home == "" {
			home = n
		}
	}
	return root, home
}

// waitDisks polls /sys/block until two virtio disks exist or the timeout passes.
func (g *guest) waitDisks() (root, home string) {
	deadline := time.Now().Add(diskTimeout)
	logged := false
	for {
		ds := listDisks("/sys/block")
		root, home = pickVolumes(ds)
		if home != "" || time.Now().After(deadline) {
			return root, home
		}
		if !logged && time.Until(deadline) < diskTimeout-3*time.Second {
			g.log.Printf("waiting for the virtio disks (have %d of 2, giving up in %v)", len(ds), time.Until(deadline).Round(time.Second))
			logged = true
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (g *guest) bringUpVolumes() {
	root, home := g.waitDisks()
	g.mu.Lock()
	g.rootDev, g.homeDev = devPath(root), devPath(home)
	g.mu.Unlock()
	if root == "" {
		g.fail("no root volume: no virtio disk appeared in %v (is virtio_blk loaded, is the disk a virtio disk?)", diskTimeout)
		return
	}
	if err := os.MkdirAll(agent.RootMount, 0o755); err != nil {
		g.fail("mkdir %s: %v", agent.RootMount, err)
	}
	// noinit_itable: the image's inode tables are initialised when it is built; those of
	// block groups a volume growth adds (grow-fs) read as zeros on a thin volume, and the
	// kernel's background zeroing would write all of them (a gigabyte and more for a
	// 64 MiB image root grown to 175 GB).
	rootDev := rootFilesystem("/sys/block", "/dev", root)
	if err := mountExt4(rootDev, agent.RootMount, "noinit_itable"); err != nil {
		g.fail("mounting the root volume: %v", err)
	} else {
		g.mu.Lock()
		g.rootMounted, g.rootFSDev = true, rootDev
		g.mu.Unlock()
		g.log.Printf("root volume %s mounted on %s", rootDev, agent.RootMount)
	}
	g.drawScreen()

	if home == "" {
		g.fail("no user volume: only one virtio disk appeared in %v", diskTimeout)
		return
	}
	dev := devPath(home)
	isExt, err := hasExtSuperblock(dev)
	if err != nil {
		g.fail("reading the user volume %s: %v", dev, err)
		return
	}
	if !isExt {
		g.setPhase("formatting the user volume")
		g.log.Printf("user volume %s has no ext4 filesystem: formatting it", dev)
		start := time.Now()
		if err := formatHome(dev); err != nil {
			g.fail("formatting the user volume %s: %v", dev, err)
			return
		}
		g.log.Printf("user volume formatted in %v", time.Since(start).Round(time.Millisecond))
		g.mu.Lock()
		g.homeFormatted = true
		g.mu.Unlock()
		g.setPhase("mounting volumes")
	}
	if err := os.MkdirAll(agent.HomeMount, 0o755); err != nil {
		g.fail("mkdir %s: %v", agent.HomeMount, err)
	}
	// noinit_itable: the filesystem was made with lazy_itable_init on a thin volume; do
	// not let the kernel zero every inode table in the background (gigabytes of writes
	// on a 2 TB volume). The tables of a fresh thin volume read as zeros anyway.
	if err := mountExt4(dev, agent.HomeMount, "noinit_itable"); err != nil {
		g.fail("mounting the user volume: %v", err)
		return
	}
	g.mu.Lock()
	g.homeMounted = true
	g.mu.Unlock()
	g.log.Printf("user volume %s mounted on %s", dev, agent.HomeMount)
}

// rootFilesystem is the device of the root volume's filesystem: the whole disk, or, on a
// partitioned disk (an imported cloud image), its first partition holding an ext
// filesystem. The kernel makes the partitions' devices (vda1...) when the disk appears.
func rootFilesystem(sysBlock, devDir, disk string) string {
	whole := filepath.Join(devDir, disk)
	if ok, err := hasExtSuperblock(whole); err != nil || ok {
		return whole
	}
	ents, _ := os.ReadDir(filepath.Join(sysBlock, disk))
	var parts []string
	for _, e := range ents {
		if n, ok := strings.CutPrefix(e.Name(), disk); ok && n != "" && strings.Trim(n, "0123456789p") == "" {
			parts = append(parts, e.Name())
		}
	}
	sort.Slice(parts, func(i, j int) bool { // vda2 < vda10
		if len(parts[i]) != len(parts[j]) {
			return len(parts[i]) < len(parts[j])
		}
		return parts[i] < parts[j]
	})
	for _, p := range parts {
		if ok, _ := hasExtSuperblock(filepath.Join(devDir, p)); ok {
			return filepath.Join(devDir, p)
		}
	}
	return whole
}

func devPath(name string) string {
	if name == "" {
		return ""
	}
	return "/dev/" + name
}

func mountExt4(dev, dir, opts string) error {
	// devtmpfs creates the node a moment after the disk appears in sysfs.
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(dev); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := unix.Mount(dev, dir, "ext4", unix.MS_NOATIME, opts); err != nil {
		return fmt.Errorf("mount %s on %s (ext4): %w", dev, dir, err)
	}
	return nil
}

// extMagicOffset is where the ext2/3/4 superblock's magic (0xEF53, little endian) is.
const extMagicOffset = 1024 + 0x38

// hasExtSuperblock reports whether dev holds an ext2/3/4 filesystem.
func hasExtSuperblock(dev string) (bool, error) {
	f, err := os.Open(dev)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var b [2]byte
	if _, err := f.ReadAt(b[:], extMagicOffset); err != nil {
		return false, err
	}
	return isExtMagic(b[:]), nil
}

func isExtMagic(b []byte) bool { return binary.LittleEndian.Uint16(b) == 0xEF53 }

// formatHome makes an ext4 filesystem on a blank user volume. Lazy init keeps this fast
// on volumes of any size; nodiscard avoids discarding a thin volume that is empty anyway.
//
// The UUID and directory hash seed are made here with GRND_INSECURE: early in boot,
// under TCG and without a virtio-rng device, the kernel's CRNG takes seconds to
// initialise and mke2fs (libuuid) would wait for it.
func formatHome(dev string) error {
	uuid, err := randomUUID()
	if err != nil {
		return err
	}
	seed, err := randomUUID()
	if err != nil {
		return err
	}
	cmd := exec.Command(mke2fsPath, "-q", "-t", "ext4", "-F", "-U", uuid,
		"-E", "lazy_itable_init=1,lazy_journal_init=1,nodiscard,hash_seed="+seed,
		"-L", "home", "-m", "0", dev)
	cmd.Env = []string{"PATH=/sbin:/bin", "MKE2FS_CONFIG=/etc/mke2fs.conf"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %v: %s", mke2fsPath, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// randomUUID returns a version 4 UUID from getrandom(GRND_INSECURE), which never blocks.
func randomUUID() (string, error) {
	var b [16]byte
	for n := 0; n < len(b); {
		m, err := unix.Getrandom(b[n:], unix.GRND_INSECURE)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return "", fmt.Errorf("getrandom: %w", err)
		}
		n += m
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return formatUUID(b[:]), nil
}

// formatUUID writes 16 bytes as a UUID, 8-4-4-4-12 hex digits.
func formatUUID(b []byte) string {
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
