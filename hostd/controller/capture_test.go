package controller

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/service"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/workspaces"
	"github.com/aws/aws-sdk-go-v2/service/workspaces/types"
)

// catalogImages finds images in the catalog (as hostd's main does), after the harness's
// fixed ones.
type catalogImages struct {
	static StaticImages
	svc    func() *service.Service
}

func (c catalogImages) ImageFiles(id string) (ImageFiles, error) {
	if f, err := c.static.ImageFiles(id); err == nil {
		return f, nil
	}
	di, err := c.svc().LoadImage(id)
	if err != nil {
		return ImageFiles{}, err
	}
	return ImageFiles{Kernel: di.Kernel, Initrd: di.Initrd, Root: di.Root, Cmdline: di.Manifest.Cmdline}, nil
}

// TestCreateImageFromWorkspace: on real libvirt + qemu, a running WorkSpace with a marker
// file, SSH host keys, a machine-id, a shell history and a log on its root volume becomes
// an image through AWS's SDK (CreateWorkspaceImage: the WorkSpace SUSPENDED, the image
// PENDING, then both AVAILABLE). The WorkSpace keeps its own files; a WorkSpace launched
// from a bundle on the image has the marker and none of what the guide's sanitising
// removes, and the image file holds none of it either. A root volume 97 % full is then
// refused: the image ends ERROR with the reason and the WorkSpace is AVAILABLE again.
// Figure: the capture's time against `qemu-img convert` of the same volume.
func TestCreateImageFromWorkspace(t *testing.T) {
	type took struct{ total, copied, convert time.Duration }
	captured := make(chan took, 2)
	var h *harness
	h = newHarness(t, func(c *Config) {
		c.Images = catalogImages{static: c.Images.(StaticImages), svc: func() *service.Service { return h.svc }}
	}, func(c *Controller) {
		c.captured = func(id string, total, copied, convert time.Duration) { captured <- took{total, copied, convert} }
	})
	cl := h.sdkClient(t)
	ctx := context.Background()

	alice := h.create("alice")
	h.waitState(alice.ID, workspace.Available, 8*time.Minute)
	// One agent connection per call: the channel serves one client at a time, and hostd's
	// health checks and the capture need it between calls.
	call := func(id string, fn func(actx context.Context, a *agent.Client) error) error {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		a, err := agent.Dial(actx, h.ctl.AgentSocket(id))
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		return fn(actx, a)
	}
	write := func(id, p, data string) {
		t.Helper()
		if err := call(id, func(actx context.Context, a *agent.Client) error { return a.WriteFile(actx, p, []byte(data)) }); err != nil {
			t.Fatalf("write %s on %s: %v", p, id, err)
		}
	}
	read := func(id, p string) (string, error) {
		t.Helper()
		var b []byte
		err := call(id, func(actx context.Context, a *agent.Client) error {
			var err error
			b, err = a.ReadFile(actx, p)
			return err
		})
		return string(b), err
	}
	const marker = "deskhost-image-marker-7d1c"
	planted := map[string]string{
		"/sysroot/opt/app/marker.txt":                       marker,
		"/sysroot/etc/ssh/ssh_host_ed25519_key":             "-----BEGIN OPENSSH PRIVATE KEY----- host key",
		"/sysroot/etc/ssh/ssh_host_ed25519_key.pub":         "ssh-ed25519 AAAA host",
		"/sysroot/etc/machine-id":                           "0123456789abcdef0123456789abcdef\n",
		"/sysroot/root/.bash_history":                       "mysql -p secret\n",
		"/sysroot/var/log/syslog":                           "a log line\n",
		"/sysroot/etc/sudoers.d/admins":                     "%admins ALL=(ALL) ALL\n",
		"/sysroot/var/lib/skylight/private.key":             "agent private key",
		"/sysroot/etc/udev/rules.d/70-persistent-net.rules": "SUBSYSTEM==\"net\"",
	}
	for p, d := range planted {
		write(alice.ID, p, d)
	}

	out, err := cl.CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{Name: aws.String("golden"),
		Description: aws.String("alice desktop"), WorkspaceId: aws.String(alice.ID)})
	if err != nil {
		t.Fatal(err)
	}
	golden := aws.ToString(out.ImageId)
	if out.State != types.WorkspaceImageStatePending {
		t.Fatalf("new image is %s, want PENDING", out.State)
	}
	seen := h.waitState(alice.ID, workspace.Available, 5*time.Minute)
	if seen[0] != workspace.Suspended {
		t.Errorf("alice went through %v, want SUSPENDED first", seen)
	}
	img := waitImage(t, cl, golden, types.WorkspaceImageStateAvailable, time.Minute)
	if aws.ToString(img.ErrorCode) != "" {
		t.Errorf("available image with an error: %+v", img)
	}
	// The sanitising boot is gone: no domain, no volume, no copy left beside the image.
	if st, err := h.conn.State(golden); err != nil || st != virt.Missing {
		t.Errorf("the sanitising boot's domain is left: %v %v", st, err)
	}
	if vols, _ := h.conn.Volumes(h.pool, golden); len(vols) != 0 {
		t.Errorf("the sanitising boot's volumes are left: %+v", vols)
	}
	if ents, _ := os.ReadDir(filepath.Join(h.dir, "images", golden)); len(ents) != 4 {
		t.Errorf("the image directory holds %d files, want image.json, kernel, initramfs, root", len(ents))
	}
	var tk took
	select {
	case tk = <-captured:
	default:
		t.Fatal("the capture reported no timing")
	}
	captureBaseline(t, h, alice.ID, tk.total, tk.copied, tk.convert)
	// The WorkSpace itself was not sanitised: only its copy was.
	for _, p := range []string{"/sysroot/etc/ssh/ssh_host_ed25519_key", "/sysroot/etc/machine-id", "/sysroot/root/.bash_history"} {
		if got, err := read(alice.ID, p); err != nil || got != planted[p] {
			t.Errorf("the source WorkSpace's %s after the capture: %q %v, want it unchanged", p, got, err)
		}
	}

	// A bundle on the image, and a WorkSpace from it.
	b, err := cl.CreateWorkspaceBundle(ctx, &workspaces.CreateWorkspaceBundleInput{BundleName: aws.String("golden"), BundleDescription: aws.String("golden"),
		ImageId: aws.String(golden), ComputeType: &types.ComputeType{Name: types.ComputeValue}, UserStorage: &types.UserStorage{Capacity: aws.String("10")},
		RootStorage: &types.RootStorage{Capacity: aws.String("80")}})
	if err != nil {
		t.Fatal(err)
	}
	bob := h.create("bob", func(r *service.CreateRequest) { r.BundleID = aws.ToString(b.WorkspaceBundle.BundleId) })
	h.waitState(bob.ID, workspace.Available, 8*time.Minute)
	if got, err := read(bob.ID, "/sysroot/opt/app/marker.txt"); err != nil || got != marker {
		t.Errorf("the marker on the new WorkSpace: %q %v", got, err)
	}
	if got, err := read(bob.ID, "/sysroot/etc/machine-id"); err != nil || got != "" {
		t.Errorf("machine-id on the new WorkSpace: %q %v, want empty", got, err)
	}
	if got, err := read(bob.ID, "/sysroot/var/log/syslog"); err == nil && got != "" {
		t.Errorf("the log on the new WorkSpace: %q", got)
	}
	for _, p := range []string{"/sysroot/etc/ssh/ssh_host_ed25519_key", "/sysroot/etc/ssh/ssh_host_ed25519_key.pub", "/sysroot/root/.bash_history",
		"/sysroot/etc/sudoers.d/admins", "/sysroot/var/lib/skylight/private.key", "/sysroot/etc/udev/rules.d/70-persistent-net.rules"} {
		if got, err := read(bob.ID, p); err == nil {
			t.Errorf("%s is on the new WorkSpace: %q", p, got)
		}
	}
	// The image file itself holds none of it either: the flattened qcow2 is uncompressed,
	// so any cluster still holding the key would show it.
	di, err := h.svc.LoadImage(golden)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(di.Root)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"OPENSSH PRIVATE KEY----- host key", "mysql -p secret", "agent private key"} {
		if strings.Contains(string(data), s) {
			t.Errorf("the image's root volume still holds %q", s)
		}
	}
	if !strings.Contains(string(data), marker) {
		t.Error("the image's root volume lacks the marker")
	}
	t.Logf("image %s: root %d KiB on disk", golden, len(data)>>10)

	// A root volume 97 % full or more: refused, the image ERROR with why, the WorkSpace back.
	fill := strings.Repeat("x", 8<<20)
	for i := 0; ; i++ {
		p := "/sysroot/fill" + string(rune('a'+i))
		err := call(alice.ID, func(actx context.Context, a *agent.Client) error { return a.WriteFile(actx, p, []byte(fill)) })
		if err != nil {
			break // the volume is full
		}
		if i > 40 {
			t.Fatal("the root volume never filled")
		}
	}
	out, err = cl.CreateWorkspaceImage(ctx, &workspaces.CreateWorkspaceImageInput{Name: aws.String("too-full"),
		Description: aws.String("full root"), WorkspaceId: aws.String(alice.ID)})
	if err != nil {
		t.Fatal(err)
	}
	h.waitState(alice.ID, workspace.Available, 5*time.Minute)
	full := waitImage(t, cl, aws.ToString(out.ImageId), types.WorkspaceImageStateError, time.Minute)
	if aws.ToString(full.ErrorCode) != "RootVolumeFull" || !strings.Contains(aws.ToString(full.ErrorMessage), "less than 97% full") {
		t.Errorf("capture of a full root: %s %q", aws.ToString(full.ErrorCode), aws.ToString(full.ErrorMessage))
	}
	if got, err := read(alice.ID, "/sysroot/opt/app/marker.txt"); err != nil || got != marker {
		t.Errorf("the source WorkSpace's marker after the captures: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "images", aws.ToString(out.ImageId))); !os.IsNotExist(err) {
		t.Errorf("the failed image left its directory: %v", err)
	}
}

// waitImage polls DescribeWorkspaceImages until id is in state want.
func waitImage(t *testing.T, cl *workspaces.Client, id string, want types.WorkspaceImageState, within time.Duration) types.WorkspaceImage {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		r, err := cl.DescribeWorkspaceImages(context.Background(), &workspaces.DescribeWorkspaceImagesInput{ImageIds: []string{id}})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Images) == 1 && r.Images[0].State == want {
			return r.Images[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("image %s: %+v after %s, want %s", id, r.Images, within, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// captureBaseline measures `qemu-img convert` of the same root volume in the same run.
func captureBaseline(t *testing.T, h *harness, id string, total, copied, convert time.Duration) {
	t.Helper()
	dst := filepath.Join(h.dir, "baseline.qcow2")
	start := time.Now()
	if b, err := exec.Command("qemu-img", "convert", "-U", "-O", "qcow2", h.ctl.volumePaths(id)[0], dst).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, b)
	}
	base := time.Since(start)
	os.Remove(dst)
	t.Logf("figure: qemu-img convert of the root volume %s; image capture %s in all (%.1f× convert: the copy's sanitising boot under TCG is most of it); the WorkSpace's part (freeze, pause, its copy) %s (%.2f× convert), of which the convert itself %s",
		base, total, float64(total)/float64(base), copied, float64(copied)/float64(base), convert)
}
