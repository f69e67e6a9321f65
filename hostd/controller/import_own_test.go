package controller

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/service"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/testenv"
)

// ownInitDisk is $DESKHOST_OWN_INIT_DISK, else a partitioned raw disk (MBR, ext4 in
// partition 1, as cloud images are) made here of scripts/own-init-disk.sh's Debian system
// (its tarball cached under build/cache/own-init).
func ownInitDisk(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("DESKHOST_OWN_INIT_DISK"); p != "" {
		return p
	}
	for _, tool := range []string{"mmdebstrap", "mkfs.ext4", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			testenv.Missing(t, tool+" is not installed (the imported Debian disk is made with it)")
		}
	}
	start := time.Now()
	cmd := exec.Command(filepath.Join(testenv.RepoRoot(), "scripts/own-init-disk.sh"), filepath.Join(testenv.RepoRoot(), "build/cache"))
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("scripts/own-init-disk.sh: %v: %s", err, b)
	}
	tarball := strings.TrimSpace(string(b))
	tree := filepath.Join(t.TempDir(), "root")
	if err := os.Mkdir(tree, 0o755); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("tar", "-C", tree, "-xf", tarball).CombinedOutput(); err != nil {
		t.Fatalf("unpack %s: %v: %s", tarball, err, b)
	}
	out := filepath.Join(t.TempDir(), "own-init.raw")
	partitionedDiskOf(t, out, tree, 1535)
	t.Logf("the Debian disk to import made in %s", time.Since(start).Round(time.Second))
	return out
}

// TestImportOwnKernel: on real libvirt + qemu, a Debian cloud-like disk (partitioned raw,
// Debian's kernel and initramfs, systemd, a oneshot service of its own) imported BYOL
// boots its own kernel and init: the image reaches AVAILABLE, and on a WorkSpace made
// from it the image's own service ran and the kernel is the image's, not the base's.
func TestImportOwnKernel(t *testing.T) {
	var h *harness
	clk := &offsetClock{}
	h = newHarness(t, func(c *Config) {
		c.Images = catalogImages{static: c.Images.(StaticImages), svc: func() *service.Service { return h.svc }}
		c.ProvisionTimeout = 10 * time.Minute // Debian under TCG
		c.Now = clk.Now
	}, nil)
	ctx := context.Background()
	base := testenvImage(t, h)
	disk := ownInitDisk(t)

	start := time.Now()
	img, err := h.svc.ImportWorkspaceImage(ctx, service.ImportImageRequest{Source: disk, IngestionProcess: "BYOL_REGULAR",
		Name: "own-init", Description: "Debian with its own kernel", BaseImage: testImage})
	if err != nil {
		t.Fatal(err)
	}
	for {
		imgs, err := h.svc.DescribeWorkspaceImages(ctx, []string{img.ID})
		if err != nil || len(imgs) != 1 {
			t.Fatalf("image %s: %v %+v", img.ID, err, imgs)
		}
		if img = imgs[0]; img.Status() != catalog.ImagePending {
			break
		}
		if time.Since(start) > 25*time.Minute {
			t.Fatalf("image %s still PENDING after %s", img.ID, time.Since(start))
		}
		time.Sleep(time.Second)
	}
	if img.Status() != catalog.ImageAvailable {
		t.Fatalf("import: %s %s %s", img.Status(), img.ErrorCode, img.ErrorMessage)
	}
	t.Logf("imported (preparation and test boots) in %s", time.Since(start).Round(time.Second))
	di, err := desktopimage.Load(img.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := di.Verify(); err != nil {
		t.Error(err)
	}
	kver := di.Manifest.KernelVersion
	if kver == "" || di.Kernel == base.Kernel || !strings.HasPrefix(di.Manifest.Cmdline, "root=UUID=") {
		t.Errorf("image.json: kernel %q %s (the base's: %s), cmdline %q", kver, di.Kernel, base.Kernel, di.Manifest.Cmdline)
	}

	b, err := h.svc.CreateWorkspaceBundle(ctx, service.BundleRequest{Name: "own-init", Description: "own init", ImageID: img.ID,
		ComputeType: catalog.ComputeValue, RootGiB: 80, UserGiB: 100})
	if err != nil {
		t.Fatal(err)
	}
	wstart := time.Now()
	w := h.create("dave", func(r *service.CreateRequest) { r.BundleID = b.ID })
	h.waitState(w.ID, workspace.Available, 15*time.Minute)
	t.Logf("WorkSpace AVAILABLE %s after its creation", time.Since(wstart).Round(time.Second))
	a := h.agent(w.ID)
	actx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	st, err := a.Status(actx)
	if err != nil {
		t.Fatal(err)
	}
	if st.KernelRelease != kver {
		t.Errorf("the WorkSpace runs kernel %q, not the image's %q", st.KernelRelease, kver)
	}
	// The agent runs as a service (its /sysroot is "/"): the kernel booted the image's
	// command line, root=UUID=, not the base's agent initramfs. (The base image's kernel
	// may be the same Debian release: its version alone would not tell.)
	if got, err := a.ReadFile(actx, "/sysroot/proc/cmdline"); err != nil || !strings.Contains(string(got), "root=UUID=") {
		t.Errorf("the WorkSpace's /proc/cmdline: %q %v", got, err)
	}
	// own-init.service wrote uname -r: the image's own systemd ran its own service.
	if got, err := a.ReadFile(actx, "/sysroot/var/lib/own-init-ran"); err != nil || strings.TrimSpace(string(got)) != kver {
		t.Errorf("the image's own service's marker: %q %v", got, err)
	}

	// Its root is partition 1 of an MBR disk: growing the root volume (80→175 GB, online)
	// grows the partition, then the filesystem; a reboot shows the table on disk says so
	// (the image's own initramfs finds root=UUID= in the grown partition).
	a.Close() // the agent's channel takes one client at a time: grow-fs is hostd's
	clk.Advance(workspace.LaunchWait + time.Minute)
	rootBefore := st.RootFSBytes
	growStart := time.Now()
	if err := h.svc.ModifyWorkspaceProperties(ctx, w.ID, workspace.PropertiesChange{RootVolumeSizeGib: new(175)}); err != nil {
		t.Fatal(err)
	}
	h.waitState(w.ID, workspace.Available, 5*time.Minute) // UPDATING since the call
	grew := time.Since(growStart)
	if got := h.status(w.ID).RootFSBytes; got < 175<<30*95/100 {
		t.Fatalf("the partitioned root filesystem is %d bytes after the volume grew to 175 GB (was %d); the WorkSpace: %+v", got, rootBefore, h.get(w.ID))
	}
	booted := h.get(w.ID).BootedAt
	if f, err := h.svc.RebootWorkspaces(ctx, []string{w.ID}); err != nil || len(f) > 0 {
		t.Fatal(err, f)
	}
	h.waitState(w.ID, workspace.Available, 10*time.Minute) // REBOOTING since the call
	if !h.get(w.ID).BootedAt.After(booted) {
		t.Fatal("the WorkSpace did not boot again")
	}
	rootAfter := h.status(w.ID).RootFSBytes
	if rootAfter < 175<<30*95/100 {
		t.Fatalf("after a reboot the root filesystem is %d bytes", rootAfter)
	}
	t.Logf("partitioned root 80→175 GB online: filesystem %d→%d bytes in %s (and after a reboot: %d bytes)",
		rootBefore, h.status(w.ID).RootFSBytes, grew.Round(time.Millisecond), rootAfter)
}
