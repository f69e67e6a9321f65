package controller

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/digest"
)

// Image import (ImportWorkspaceImage, BYOL; guide catalog §4.4). A PENDING image whose
// Maker is this host is made by a worker keyed by the image id:
//
//  1. the source is fetched (an http(s) URL) or read where it is (a path);
//  2. an imagebuild desktop image directory is checked against its checksums and linked
//     in as it is; a disk image file must be qcow2 or raw (a raw one must hold a partition
//     table or an ext filesystem), unencrypted, self-contained and at most 70 GiB, and is
//     converted, then adopted in a preparation boot: a domain of its own, without NICs,
//     booting the base image's kernel and its initramfs, the guest agent (PID 1), which
//     mounts the imported root (the whole disk's or the first partition's ext4), checks
//     for systemd and a kernel in /boot with its initramfs (refused NoSystemd, NoKernel),
//     installs itself as a systemd service (internal/guestservice) and hands hostd that
//     kernel and initramfs; the adopted root is flattened into the image's root.qcow2,
//     beside them, image.json booting root=UUID= of the root filesystem;
//  3. the image is test-booted in a domain of its own, without NICs, as WorkSpaces boot
//     it (an adopted disk: its own kernel, initramfs and systemd), until its agent
//     answers with both volumes mounted; the domain is then powered off, its RAM scrubbed;
//  4. the image becomes AVAILABLE, or ERROR with a code and the reason.
//
// A crash starts the import again from step 1.

// MaxImportBytes is the guide's BYOL limit: "a single volume with a maximum size of 70 GB".
const MaxImportBytes = 70 << 30

// importError is an import's failure, with the ErrorCode DescribeWorkspaceImages shows.
type importError struct {
	code string
	err  error
}

func (e *importError) Error() string { return e.err.Error() }

func importFail(code, format string, a ...any) error {
	return &importError{code, fmt.Errorf(format, a...)}
}

// reconcileImport makes image id if it is a PENDING import of this host's; it reports
// whether the worker is done with it.
func (c *Controller) reconcileImport(ctx context.Context, id string) bool {
	var img catalog.Image
	err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		img, err = store.GetJSON[catalog.Image](tx, store.Images, id)
		return err
	})
	if err == nil && img.Status() == catalog.ImagePending && img.SourceWorkspace != "" {
		return true // a capture's sanitising boot: the capture (capture.go) owns it
	}
	if errors.Is(err, store.ErrNotFound) || err == nil && (img.Status() != catalog.ImagePending || img.Import == "" || img.Maker != c.cfg.Owner) {
		if err := c.removeOrphan(ctx, id); err != nil { // a test boot left by a crash
			c.cfg.Log.Error("remove an import's test boot", "image", id, "err", err)
			return false
		}
		return true
	}
	if err != nil {
		c.cfg.Log.Error("load image", "image", id, "err", err)
		return false
	}
	// Leftovers of an attempt a crash cut short (its preparation or test boot's domain and
	// volumes, still running on the files in img.Dir): the import starts again at step 1.
	if err := c.removeOrphan(ctx, id); err != nil {
		c.cfg.Log.Error("remove an interrupted import's boot", "image", id, "err", err)
		return false // retried at the next tick
	}
	start := time.Now()
	err = c.importImage(ctx, img)
	if ctx.Err() != nil {
		return false // interrupted: the next reconcile starts again
	}
	if cerr := c.removeOrphan(context.WithoutCancel(ctx), id); cerr != nil {
		c.cfg.Log.Error("remove an import's test boot", "image", id, "err", cerr)
		return false
	}
	if err != nil {
		code := "ImportFailed"
		var ie *importError
		if errors.As(err, &ie) {
			code = ie.code
		}
		c.cfg.Log.Warn("image import failed", "image", id, "source", img.Import, "code", code, "err", err)
		os.RemoveAll(img.Dir)
		if ferr := finishImage(c.cfg.Store, c.cfg.Owner, id, nil, code, err.Error()); ferr != nil {
			c.cfg.Log.Error("record the failed import", "image", id, "err", ferr)
			return false
		}
		return true
	}
	di, err := desktopimage.Load(img.Dir)
	if err == nil {
		err = finishImage(c.cfg.Store, c.cfg.Owner, id, &di, "", "")
	}
	if err != nil {
		c.cfg.Log.Error("record the import", "image", id, "err", err)
		return false
	}
	c.cfg.Log.Info("image imported", "image", id, "source", img.Import, "duration", time.Since(start))
	return true
}

func (c *Controller) importImage(ctx context.Context, img catalog.Image) error {
	if err := os.RemoveAll(img.Dir); err != nil {
		return err
	}
	if err := os.MkdirAll(img.Dir, 0o755); err != nil {
		return err
	}
	src := img.Import
	if strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://") {
		dl := filepath.Join(img.Dir, "download")
		if err := download(ctx, src, dl); err != nil {
			return err
		}
		defer os.Remove(dl)
		src = dl
	}
	fi, err := os.Stat(src)
	if err != nil {
		return importFail("SourceNotFound", "import source %s: %v", img.Import, err)
	}
	if fi.IsDir() {
		if err := importDir(src, img); err != nil {
			return err
		}
	} else if err := c.importDisk(ctx, src, img); err != nil {
		return err
	}
	di, err := desktopimage.Load(img.Dir)
	if err != nil {
		return importFail("InvalidImage", "%v", err)
	}
	return c.testBoot(ctx, img.ID, di)
}

// download fetches url into dst, at most MaxImportBytes.
func download(ctx context.Context, url, dst string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return importFail("DownloadFailed", "import source %s: %v", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return importFail("DownloadFailed", "import source %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return importFail("DownloadFailed", "import source %s: HTTP %s", url, resp.Status)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, io.LimitReader(resp.Body, MaxImportBytes+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return importFail("DownloadFailed", "import source %s: %v", url, err)
	}
	if n > MaxImportBytes {
		return importFail("ImageTooLarge", "import source %s is larger than %d GiB, the most an imported image may be", url, MaxImportBytes>>30)
	}
	return nil
}

// importDir takes an imagebuild desktop image directory as it is, once its files match
// the checksums its image.json records.
func importDir(dir string, img catalog.Image) error {
	di, err := desktopimage.Load(dir)
	if err != nil {
		return importFail("InvalidImage", "%v", err)
	}
	if err := di.Verify(); err != nil {
		return importFail("InvalidImage", "%v", err)
	}
	if di.Manifest.OS != string(catalog.Linux) {
		return importFail("UnsupportedOperatingSystem", "desktop image %s is %s; this host imports Linux images", dir, di.Manifest.OS)
	}
	m := di.Manifest
	m.Name = img.Name
	for _, f := range []string{di.Kernel, di.Initrd, di.Root} {
		if err := linkOrCopy(f, filepath.Join(img.Dir, filepath.Base(f))); err != nil {
			return err
		}
	}
	m.Kernel, m.Initrd, m.Root = filepath.Base(di.Kernel), filepath.Base(di.Initrd), filepath.Base(di.Root)
	_, err = desktopimage.WriteManifest(img.Dir, m)
	return err
}

// diskInfo is what qemu-img says of a disk image.
type diskInfo struct {
	Format          string `json:"format"`
	VirtualSize     int64  `json:"virtual-size"`
	Encrypted       bool   `json:"encrypted"`
	BackingFilename string `json:"backing-filename"`
}

// importDisk converts a qcow2 or raw disk image and adopts it (adoptDisk): the image
// boots its own kernel and init.
func (c *Controller) importDisk(ctx context.Context, src string, img catalog.Image) error {
	out, err := exec.Command("qemu-img", "info", "--output=json", src).Output()
	if err != nil {
		return importFail("NotADiskImage", "%s is not a disk image qemu-img can read", img.Import)
	}
	var info diskInfo
	if err := json.Unmarshal(out, &info); err != nil {
		return importFail("NotADiskImage", "%s: qemu-img info: %v", img.Import, err)
	}
	switch {
	case info.Format != "qcow2" && info.Format != "raw":
		return importFail("UnsupportedFormat", "%s is a %s image; this host imports qcow2 or raw disk images (convert it with qemu-img convert -O qcow2)", img.Import, info.Format)
	case info.Encrypted:
		return importFail("EncryptedImage", "%s is encrypted; importing an encrypted disk is not supported", img.Import)
	case info.BackingFilename != "":
		return importFail("InvalidImage", "%s has a backing file (%s); import a self-contained image", img.Import, info.BackingFilename)
	case info.VirtualSize > MaxImportBytes:
		return importFail("ImageTooLarge", "%s is %d GiB; an imported image may be at most %d GiB", img.Import, info.VirtualSize>>30, MaxImportBytes>>30)
	}
	if info.Format == "raw" {
		// qemu-img calls any file raw: a disk has a partition table or a filesystem.
		if ok, err := looksLikeDisk(src); err != nil {
			return err
		} else if !ok {
			return importFail("NotADiskImage", "%s is not a disk image: no partition table (MBR or GPT) and no ext filesystem", img.Import)
		}
	}
	base, err := c.cfg.Images.ImageFiles(img.BaseImage)
	if err != nil {
		return importFail("BaseImageUnavailable", "base image %s: %v", img.BaseImage, err)
	}
	bi, err := desktopimage.Load(filepath.Dir(base.Root))
	if err != nil {
		return importFail("BaseImageUnavailable", "base image %s: %v", img.BaseImage, err)
	}
	converted := filepath.Join(img.Dir, "import.qcow2")
	defer os.Remove(converted)
	if b, err := exec.Command("qemu-img", "convert", "-f", info.Format, "-O", "qcow2", src, converted).CombinedOutput(); err != nil {
		return importFail("ImportFailed", "converting %s: %v: %s", img.Import, err, strings.TrimSpace(string(b)))
	}
	return c.adoptDisk(ctx, img, bi, converted, info.VirtualSize)
}

// ImportedCmdline is an adopted image's kernel command line after root=UUID=: the
// graphical image's console and naming settings (hostd's eth0/eth1 names).
const ImportedCmdline = "rw net.ifnames=0 console=tty0 console=ttyS0,115200 quiet systemd.show_status=1 panic=-1"

// adoptDisk makes the converted disk an image that boots its own kernel, initramfs and
// init: a preparation boot (the base image's kernel, its agent as PID 1, the disk as the
// root volume) where the agent adopts the root (agent.OpAdopt: the agent installed as a
// systemd service) and hands over the kernel and initramfs, which go beside the adopted
// root, flattened, with image.json naming them.
func (c *Controller) adoptDisk(ctx context.Context, img catalog.Image, base desktopimage.Image, disk string, size int64) error {
	helper := desktopimage.Image{Dir: img.Dir, Manifest: base.Manifest, Kernel: base.Kernel, Initrd: base.Initrd, Root: disk}
	helper.Manifest.RootVirtualSize = size
	var ad *agent.Adoption
	var adoptErr error
	start := time.Now()
	err := c.bootIsolated(ctx, img.ID, helper, func(actx context.Context, a *agent.Client) error {
		ad, adoptErr = a.Adopt(actx)
		if adoptErr != nil {
			return adoptErr
		}
		for _, f := range []struct {
			src  string
			size int64
		}{{ad.Kernel, ad.KernelBytes}, {ad.Initrd, ad.InitrdBytes}} {
			if err := fetchGuestFile(actx, a, f.src, f.size, filepath.Join(img.Dir, bootFileName(f.src, ad.KernelVersion))); err != nil {
				return fmt.Errorf("reading %s from the guest: %w", f.src, err)
			}
		}
		return nil
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case adoptErr != nil && strings.Contains(adoptErr.Error(), agent.AdoptNoKernel):
		return importFail("NoKernel", "%s cannot boot on its own: %v", img.Import, adoptErr)
	case adoptErr != nil && strings.Contains(adoptErr.Error(), agent.AdoptNoSystemd):
		return importFail("NoSystemd", "%s cannot run deskhost's guest agent: %v", img.Import, adoptErr)
	case adoptErr != nil:
		return importFail("AdoptFailed", "preparing %s to boot on its own: %v", img.Import, adoptErr)
	case err != nil:
		var ie *importError
		if errors.As(err, &ie) {
			return &importError{ie.code, fmt.Errorf("preparation boot: %w", ie.err)}
		}
		return importFail("PrepareBootFailed", "preparation boot: %v", err)
	}
	root := filepath.Join(img.Dir, "root.qcow2")
	if err := qemuImgConvert(c.volumePaths(img.ID)[0], root); err != nil {
		return importFail("ImportFailed", "flattening the adopted root: %v", err)
	}
	if err := c.removeOrphan(ctx, img.ID); err != nil {
		return err
	}
	c.cfg.Log.Info("imported image adopted", "image", img.ID, "kernel", ad.KernelVersion, "rootUUID", ad.RootUUID, "duration", time.Since(start))
	m := base.Manifest
	m.Name, m.Root, m.RootFormat = img.Name, "root.qcow2", "qcow2"
	// The flattened overlay's size (bootIsolated rounds the root volume up to whole GiB).
	if m.RootVirtualSize, err = virtualSize(root); err != nil {
		return importFail("ImportFailed", "%v", err)
	}
	m.Kernel, m.Initrd = bootFileName(ad.Kernel, ad.KernelVersion), bootFileName(ad.Initrd, ad.KernelVersion)
	m.Cmdline = "root=UUID=" + ad.RootUUID + " " + ImportedCmdline
	m.BootProtocol, m.KernelVersion = "bzImage", ad.KernelVersion
	m.KernelPackage, m.KernelPackageVersion, m.InitrdCompression, m.Modules = "", "", "", nil
	m.AgentVersion = agent.Version
	m.SHA256 = map[string]string{}
	for _, f := range []string{m.Kernel, m.Initrd, m.Root} {
		sum, err := digest.File(filepath.Join(img.Dir, f))
		if err != nil {
			return err
		}
		m.SHA256[f] = sum
	}
	_, err = desktopimage.WriteManifest(img.Dir, m)
	return err
}

// bootFileName names an adopted kernel or initramfs in the image directory:
// vmlinuz-<version> or initrd.img-<version>.
func bootFileName(guestPath, version string) string {
	if strings.Contains(filepath.Base(guestPath), "vmlinuz") {
		return "vmlinuz-" + version
	}
	return "initrd.img-" + version
}

// maxBootFileBytes bounds a kernel or initramfs read from an imported image.
const maxBootFileBytes = 512 << 20

// fetchGuestFile copies a guest file of the given size into dst with read-chunk.
func fetchGuestFile(ctx context.Context, a *agent.Client, src string, size int64, dst string) error {
	if size <= 0 || size > maxBootFileBytes {
		return fmt.Errorf("%s is %d bytes; a kernel or initramfs may be at most %d MiB", src, size, maxBootFileBytes>>20)
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	var off int64
	for off < size {
		b, total, err := a.ReadChunk(ctx, src, off, agent.MaxChunkBytes)
		if err == nil && total != size {
			err = fmt.Errorf("its size changed from %d to %d bytes", size, total)
		}
		if err == nil && len(b) == 0 {
			err = fmt.Errorf("ends at %d bytes, not %d", off, size)
		}
		if err == nil {
			_, err = f.Write(b)
		}
		if err != nil {
			f.Close()
			return err
		}
		off += int64(len(b))
	}
	return f.Close()
}

// looksLikeDisk reports whether a raw file starts like a disk: an MBR or GPT, or an ext
// superblock.
func looksLikeDisk(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	b := make([]byte, 2048)
	n, _ := io.ReadFull(f, b)
	b = b[:n]
	switch {
	case len(b) >= 520 && string(b[512:520]) == "EFI PART":
		return true, nil
	case len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA:
		return true, nil
	case len(b) >= 1024+58 && binary.LittleEndian.Uint16(b[1024+56:]) == 0xEF53:
		return true, nil
	}
	return false, nil
}

func linkOrCopy(src, dst string) error {
	os.Remove(dst)
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	return copySparse(src, dst)
}

// testBoot boots image id (di) in a domain named after it, with a blank user volume and no
// NIC, until its agent answers as that image with both volumes mounted.
func (c *Controller) testBoot(ctx context.Context, id string, di desktopimage.Image) error {
	return c.bootIsolated(ctx, id, di, nil)
}

// bootIsolated boots di under id (a domain and volumes of that name: an overlay on di's
// root and a blank user volume), without NIC, until its agent answers as id with both
// volumes mounted; then runs during (if set) with the agent, and powers the guest off,
// gracefully when all went well (the agent syncs and unmounts the volumes), its RAM
// scrubbed. The domain and volumes stay for the caller to read and remove (removeOrphan).
func (c *Controller) bootIsolated(ctx context.Context, id string, di desktopimage.Image, during func(ctx context.Context, a *agent.Client) error) error {
	gib := int((di.Manifest.RootVirtualSize + 1<<30 - 1) >> 30)
	if gib < 1 {
		gib = 1
	}
	root, err := c.cfg.Conn.CreateVolume(c.cfg.Pool, rootVolume(id), gib, di.Root)
	if err != nil {
		return err
	}
	user, err := c.cfg.Conn.CreateVolume(c.cfg.Pool, userVolume(id), 1, "")
	if err != nil {
		return err
	}
	mem := 0
	for _, hw := range c.cfg.ComputeTypes {
		if mem == 0 || hw.MemoryMiB < mem {
			mem = hw.MemoryMiB
		}
	}
	spec := virt.Spec{
		Name: id, Owner: c.cfg.Owner, Type: c.cfg.DomainType, VCPUs: 1, MemoryMiB: mem,
		HugePages: c.cfg.HugePages, RunAs: c.cfg.Confine.Label(), Limits: c.cfg.Confine.Limits,
		Kernel: di.Kernel, Initrd: di.Initrd, Cmdline: strings.TrimSpace(di.Manifest.Cmdline + " deskhost.workspace=" + id),
		RootVolume: root.Path, UserVolume: user.Path, Isolated: true, NoClipboard: true,
		VNCSocket: c.VNCSocket(id), AgentSocket: c.AgentSocket(id), SerialLog: c.SerialLog(id),
	}
	if err := os.MkdirAll(c.runDir(id), 0o700); err != nil {
		return err
	}
	if err := c.cfg.Confine.Prepare(c.runDir(id), []string{root.Path, user.Path}, []string{di.Kernel, di.Initrd, di.Root}); err != nil {
		return err
	}
	if err := c.cfg.Conn.Define(spec); err != nil {
		return err
	}
	start := func() error { return c.cfg.Conn.StartPaused(id) }
	if c.cfg.HugePages {
		if _, err := memscrub.WithHugePages(int64(mem)<<20, start); err != nil {
			return err
		}
	} else if err := start(); err != nil {
		return err
	}
	if err := c.hold(id, true); err != nil {
		_ = c.cfg.Conn.Destroy(id)
		return err
	}
	if err := c.cfg.Conn.Resume(id); err != nil {
		return err
	}
	booted := time.Now()
	runErr := c.waitImageAgent(ctx, id)
	if runErr == nil {
		c.cfg.Log.Info("image booted in isolation", "image", id, "agentAfter", time.Since(booted))
		if during != nil {
			runErr = func() error {
				actx, cancel := context.WithTimeout(ctx, SanitizeTimeout)
				defer cancel()
				a, err := agent.Dial(actx, c.AgentSocket(id))
				if err != nil {
					return err
				}
				defer a.Close()
				return during(actx, a)
			}()
		}
	}
	if err := c.powerOff(context.WithoutCancel(ctx), id, runErr == nil); err != nil {
		return errors.Join(runErr, err)
	}
	return runErr
}

// waitImageAgent waits up to ProvisionTimeout for the test boot's agent to answer as id
// with both volumes mounted.
func (c *Controller) waitImageAgent(ctx context.Context, id string) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProvisionTimeout)
	defer cancel()
	last := errors.New("no answer")
	for {
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		a, err := agent.Dial(actx, c.AgentSocket(id))
		if err == nil {
			var st *agent.Status
			st, err = a.Status(actx)
			a.Close()
			switch {
			case err != nil:
			case st.WorkspaceID != id:
				acancel()
				return importFail("TestBootFailed", "the test boot's agent answers as %q, not %s", st.WorkspaceID, id)
			case !st.RootMounted:
				acancel()
				return importFail("TestBootFailed", "the guest agent started but could not mount the imported root volume (it needs an ext4 filesystem on the whole disk or on a partition): %s", strings.Join(st.Errors, "; "))
			case !st.HomeMounted:
				err = fmt.Errorf("user volume not mounted yet: %s", strings.Join(st.Errors, "; "))
			default:
				acancel()
				return nil
			}
		}
		acancel()
		last = err
		if st, serr := c.cfg.Conn.State(id); serr == nil && !st.Active() {
			return importFail("TestBootFailed", "the test boot's guest stopped before its agent answered; serial console: %s", c.serialTail(id))
		}
		select {
		case <-ctx.Done():
			if ctx.Err() == context.DeadlineExceeded {
				return importFail("TestBootFailed", "the guest agent did not answer within %s of the test boot (last: %v); serial console: %s", c.cfg.ProvisionTimeout, last, c.serialTail(id))
			}
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// serialTail is the end of id's serial console log, on one line.
func (c *Controller) serialTail(id string) string {
	b, _ := os.ReadFile(c.SerialLog(id))
	if len(b) > 400 {
		b = b[len(b)-400:]
	}
	return strings.Join(strings.Fields(strings.ToValidUTF8(string(b), "?")), " ")
}

// sweepImports wakes the worker of every PENDING import this host makes, and of every
// test boot domain left without one.
func (c *Controller) sweepImports() error {
	var all []catalog.Image
	if err := c.cfg.Store.View(func(tx store.Tx) error {
		var err error
		all, err = store.ListJSON[catalog.Image](tx, store.Images)
		return err
	}); err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	for _, i := range all {
		if i.Status() == catalog.ImagePending && i.Import != "" && i.Maker == c.cfg.Owner {
			c.Poke(i.ID)
		}
	}
	doms, err := c.cfg.Conn.Domains(catalog.KindImage.Prefix)
	if err != nil {
		return err
	}
	for _, d := range doms {
		if owner, err := c.cfg.Conn.Owner(d); err == nil && owner == c.cfg.Owner {
			c.Poke(d)
		}
	}
	return nil
}
