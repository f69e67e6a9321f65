package controller

import (
	"context"
	"encoding/binary"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/service"
	"deskhost/hostd/virt"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
)

// TestImportWorkspaceImage: on real libvirt + qemu, ImportWorkspaceImage test-boots each
// import to a healthy agent before it is AVAILABLE:
//   - the project's own desktop image directory, by path;
//
// and ends bad imports ERROR with the reason: a partitioned raw disk over http whose ext4
// root has no systemd and no kernel (NoSystemd: it cannot boot on its own; see
// TestImportOwnKernel for one that can), one with systemd but no kernel (NoKernel), a
// text file (not a disk image), a directory
// whose kernel is missing, a blank qcow2 (no filesystem: the agent answers but cannot
// mount it), an image whose agent never answers. No test domain or volume is left.
func TestImportWorkspaceImage(t *testing.T) {
	var h *harness
	h = newHarness(t, func(c *Config) {
		c.Images = catalogImages{static: c.Images.(StaticImages), svc: func() *service.Service { return h.svc }}
		c.ProvisionTimeout = 45 * time.Second // the never-answering import waits this long
	}, nil)
	ctx := context.Background()
	// The base image (its kernel and the agent's initramfs) is a registered image, as an
	// operator's would be: imagebuild's desktop image.
	own := testenvImage(t, h)

	src := t.TempDir()
	// A raw disk laid out as cloud images are (a partition table, the root filesystem,
	// ext4, in a partition) but holding neither systemd nor a kernel.
	tree := filepath.Join(src, "tree")
	os.MkdirAll(filepath.Join(tree, "opt"), 0o755)
	const marker = "imported-root-marker-51c2"
	os.WriteFile(filepath.Join(tree, "opt", "marker.txt"), []byte(marker), 0o644)
	raw := filepath.Join(src, "disk.raw")
	partitionedDisk(t, raw, tree)
	// One with systemd but no kernel in /boot.
	sysTree := filepath.Join(src, "systree")
	os.MkdirAll(filepath.Join(sysTree, "lib", "systemd"), 0o755)
	os.WriteFile(filepath.Join(sysTree, "lib", "systemd", "systemd"), []byte("not really systemd"), 0o755)
	noBoot := filepath.Join(src, "noboot.raw")
	partitionedDisk(t, noBoot, sysTree)
	// Not a disk image at all.
	text := filepath.Join(src, "notes.txt")
	os.WriteFile(text, []byte("this is not a disk image\n"), 0o644)
	// A qcow2 with nothing on it.
	blank := filepath.Join(src, "blank.qcow2")
	if b, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", blank, "64M").CombinedOutput(); err != nil {
		t.Fatalf("qemu-img create: %v: %s", err, b)
	}
	// The desktop image without its kernel, and one whose agent never starts.
	noKernel := copyDir(t, own.Dir, filepath.Join(src, "nokernel"))
	os.Remove(filepath.Join(noKernel, own.Manifest.Kernel))
	silent := copyDir(t, own.Dir, filepath.Join(src, "silent"))
	m := own.Manifest
	m.Cmdline += " rdinit=/nonexistent"
	if _, err := desktopimage.WriteManifest(silent, m); err != nil {
		t.Fatal(err)
	}

	// The raw disk over http, from loopback.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.FileServer(http.Dir(src))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	url := "http://" + ln.Addr().String() + "/disk.raw"

	start := func(name, source string) string {
		t.Helper()
		img, err := h.svc.ImportWorkspaceImage(ctx, service.ImportImageRequest{Source: source, IngestionProcess: "BYOL_REGULAR",
			Name: name, Description: "imported " + name, BaseImage: testImage})
		if err != nil {
			t.Fatalf("import %s: %v", name, err)
		}
		return img.ID
	}
	wait := func(id string, within time.Duration) catalog.Image {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			imgs, err := h.svc.DescribeWorkspaceImages(ctx, []string{id})
			if err != nil || len(imgs) != 1 {
				t.Fatalf("image %s: %v %+v", id, err, imgs)
			}
			if imgs[0].Status() != catalog.ImagePending {
				return imgs[0]
			}
			if time.Now().After(deadline) {
				t.Fatalf("image %s still PENDING after %s", id, within)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	ownID := start("own", own.Dir)
	rawID := start("raw", url)
	textID := start("text", text)
	noBootID := start("noboot", noBoot)
	noKernelID := start("nokernel", noKernel)
	blankID := start("blank", blank)
	silentID := start("silent", silent)

	for _, tc := range []struct{ id, code, want string }{
		{rawID, "NoSystemd", "no systemd"},
		{textID, "NotADiskImage", "not a disk image"},
		{noBootID, "NoKernel", "no /boot/vmlinuz-<version>"},
		{noKernelID, "InvalidImage", "kernel"},
		{blankID, "TestBootFailed", "could not mount the imported root volume"},
		{silentID, "TestBootFailed", "did not answer within"},
	} {
		img := wait(tc.id, 5*time.Minute)
		if img.Status() != catalog.ImageError || img.ErrorCode != tc.code || !strings.Contains(img.ErrorMessage, tc.want) {
			t.Errorf("import %s: %s %s %q, want ERROR %s saying %q", img.Name, img.Status(), img.ErrorCode, img.ErrorMessage, tc.code, tc.want)
		}
		if _, err := os.Stat(img.Dir); !os.IsNotExist(err) {
			t.Errorf("failed import %s left %s", img.Name, img.Dir)
		}
	}
	if img := wait(ownID, 5*time.Minute); img.Status() != catalog.ImageAvailable || img.ErrorCode != "" {
		t.Fatalf("import %s: %s %s %s", img.Name, img.Status(), img.ErrorCode, img.ErrorMessage)
	}
	h.ctl.WaitIdle()
	for _, id := range []string{ownID, rawID, blankID, silentID} {
		if st, err := h.conn.State(id); err != nil || st != virt.Missing {
			t.Errorf("test boot domain %s left: %v %v", id, st, err)
		}
		if vols, _ := h.conn.Volumes(h.pool, id); len(vols) != 0 {
			t.Errorf("test boot volumes of %s left: %+v", id, vols)
		}
	}
}

// testenvImage is the desktop image the harness boots.
func testenvImage(t *testing.T, h *harness) desktopimage.Image {
	t.Helper()
	f, err := h.ctl.cfg.Images.ImageFiles(testImage)
	if err != nil {
		t.Fatal(err)
	}
	di, err := desktopimage.Load(filepath.Dir(f.Root))
	if err != nil {
		t.Fatal(err)
	}
	return di
}

// copyDir copies an image directory's files into dst.
func copyDir(t *testing.T, src, dst string) string {
	t.Helper()
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("cp", "-a", src+"/.", dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, b)
	}
	return dst
}

// partitionedDisk writes a raw disk at p: an MBR with one Linux partition from 1 MiB,
// holding an ext4 filesystem made from tree.
func partitionedDisk(t *testing.T, p, tree string) { partitionedDiskOf(t, p, tree, 64) }

// partitionedDiskOf is partitionedDisk with an ext4 partition of mib MiB.
func partitionedDiskOf(t *testing.T, p, tree string, mib int) {
	t.Helper()
	const start = 1 << 20
	size := mib << 20
	if b, err := exec.Command("mkfs.ext4", "-q", "-F", "-E", "offset="+strconv.Itoa(start), "-d", tree, p, strconv.Itoa(mib)+"M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, b)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var mbr [66]byte // four partition entries and the signature, at 446
	e := mbr[:16]
	e[4] = 0x83 // Linux
	binary.LittleEndian.PutUint32(e[8:], start/512)
	binary.LittleEndian.PutUint32(e[12:], uint32(size/512))
	mbr[64], mbr[65] = 0x55, 0xAA
	if _, err := f.WriteAt(mbr[:], 446); err != nil {
		t.Fatal(err)
	}
}
