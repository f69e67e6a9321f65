package desktop_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	stdimage "image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/imagebuild/desktop"
	"deskhost/imagebuild/internal/testenv"
	"deskhost/internal/desktopimage"
)

// The metadata service the graphical test's guest reaches at 169.254.169.254:80: qemu's
// guestfwd runs this test binary once per connection with these variables set, and it
// answers one HTTP request on stdin/stdout as netcfg/metadata does (IMDSv2 token first).
const (
	metadataHelperEnv = "DESKHOST_TEST_METADATA_USER"
	metadataToken     = "deskhost-test-token"
)

func serveMetadataOnce() {
	user := os.Getenv(metadataHelperEnv)
	req, err := http.ReadRequest(bufio.NewReader(os.Stdin))
	if err != nil {
		os.Exit(1)
	}
	status, body := http.StatusNotFound, "not found\n"
	switch {
	case req.Method == http.MethodPut && req.URL.Path == "/latest/api/token":
		status, body = http.StatusOK, metadataToken
	case req.Header.Get("X-aws-ec2-metadata-token") != metadataToken:
		status, body = http.StatusUnauthorized, "token required\n"
	case req.Method == http.MethodGet && req.URL.Path == "/latest/meta-data/workspaces/user-name":
		status, body = http.StatusOK, user
	case req.Method == http.MethodGet && req.URL.Path == "/latest/meta-data/instance-id":
		status, body = http.StatusOK, testWorkspace
	}
	resp := &http.Response{StatusCode: status, ProtoMajor: 1, ProtoMinor: 1, Close: true,
		Header: http.Header{"Content-Type": {"text/plain"}}, ContentLength: int64(len(body)),
		Body: io.NopCloser(strings.NewReader(body))}
	w := bufio.NewWriter(os.Stdout)
	_ = resp.Write(w)
	_ = w.Flush()
}

var (
	graphicalOnce sync.Once
	graphicalDir  string
	graphicalMan  *desktop.Manifest
	graphicalErr  error
	graphicalTime time.Duration
	graphicalTmp  string // removed by TestMain
)

// graphicalImage is $DESKHOST_GRAPHICAL_IMAGE (made by `make image-graphical`), else a
// build of the graphical profile into a temporary directory with the shared cache (the
// Debian system and its .debs are cached there: a warm build only adds deskhost's files).
func graphicalImage(t *testing.T) (string, *desktop.Manifest) {
	t.Helper()
	if d := os.Getenv("DESKHOST_GRAPHICAL_IMAGE"); d != "" {
		m, err := desktop.Load(d, true)
		if err != nil {
			t.Fatalf("DESKHOST_GRAPHICAL_IMAGE: %v", err)
		}
		return d, m
	}
	needTools(t, "mmdebstrap", "tar", "chroot", "mke2fs", "qemu-img", "go")
	graphicalOnce.Do(func() {
		graphicalTmp, graphicalErr = os.MkdirTemp("", "deskhost-graphical-test-")
		if graphicalErr != nil {
			return
		}
		graphicalDir = filepath.Join(graphicalTmp, "img")
		start := time.Now()
		graphicalMan, graphicalErr = desktop.Build(context.Background(), desktop.Options{
			Out: graphicalDir, CacheDir: cacheDir(t), Profile: desktop.ProfileGraphical,
			Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "build graphical: "+f+"\n", a...) },
		})
		graphicalTime = time.Since(start)
	})
	if graphicalErr != nil {
		t.Fatalf("building the graphical desktop image: %v", graphicalErr)
	}
	return graphicalDir, graphicalMan
}

// TestGraphicalBadInput: a wrong profile or kernel options the graphical profile cannot
// honour are refused by name, before anything is made.
func TestGraphicalBadInput(t *testing.T) {
	out := filepath.Join(t.TempDir(), "img")
	for _, o := range []desktop.Options{
		{Out: out, CacheDir: t.TempDir(), Profile: "kde"},
		{Out: out, CacheDir: t.TempDir(), Profile: desktop.ProfileGraphical, KernelDeb: "/tmp/linux.deb"},
		{Out: out, CacheDir: t.TempDir(), Profile: desktop.ProfileGraphical, KernelVersion: "6.1.0-1"},
	} {
		_, err := desktop.Build(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "profile") {
			t.Errorf("%+v: error %v, want one naming the profile", o, err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%+v: output made: %v", o, err)
		}
	}
}

// TestGraphicalDesktop boots the graphical image as hostd's domains are booted (direct
// kernel boot of image.json's files, root qcow2 child as vda, a blank user volume as
// vdb, the agent channel, VGA, the management NIC with the metadata service), under TCG,
// and checks: the user comes from the metadata service (not deskhost.user=), its home is
// on the user volume, LightDM logs it into Xfce at the size asked for, the guest agent
// answers, and a screenshot of the logged-in desktop is a picture, not a blank screen or a
// text console. It saves the screenshot as a PNG and reports the boot-to-login time.
func TestGraphicalDesktop(t *testing.T) {
	needTools(t, "qemu-system-x86_64", "qemu-img")
	dir, m := graphicalImage(t)
	if graphicalTime > 0 {
		t.Logf("build: %v", graphicalTime.Round(time.Second))
	}
	img, err := desktopimage.Load(dir)
	if err != nil {
		t.Fatalf("hostd cannot load the image: %v", err)
	}
	if err := img.Verify(); err != nil {
		t.Fatal(err)
	}
	if m.BootProtocol != desktop.BootBzImage || m.AgentChannel != agent.ChannelName || m.OS != "linux" {
		t.Errorf("manifest: %+v", m)
	}
	var size int64
	for _, f := range []string{m.Kernel, m.Initrd, m.Root} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		size += st.Size()
		t.Logf("%s: %.1f MiB", f, float64(st.Size())/(1<<20))
	}
	t.Logf("image: %.0f MiB (root volume %d MiB virtual)", float64(size)/(1<<20), m.RootVirtualSize>>20)

	const (
		dirUser   = "Alice Smith" // the directory's user name, as the metadata service serves it
		login     = "alice_smith"
		display   = "1280x800"
		dispW     = 1280
		dispH     = 800
		cmdUser   = "cmdline-user" // must lose to the metadata service
		bootLimit = 25 * time.Minute
	)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	v := bootVM(t, vmOpts{
		kernel: filepath.Join(dir, m.Kernel), initrd: filepath.Join(dir, m.Initrd), root: filepath.Join(dir, m.Root),
		cmdline: m.Cmdline + " deskhost.workspace=" + testWorkspace + " deskhost.user=" + url.QueryEscape(cmdUser) + " deskhost.display=" + display,
		memMiB:  2048, cpus: 2,
		env: []string{metadataHelperEnv + "=" + dirUser},
		extra: []string{
			// eth0, the management NIC: 169.254.169.254 inside qemu's user network, forwarded
			// to the metadata helper; restrict=on: nothing else leaves the guest.
			"-netdev", "user,id=mgmt,restrict=on,net=169.254.169.0/24,host=169.254.169.1,dhcpstart=169.254.169.15," +
				"guestfwd=tcp:169.254.169.254:80-cmd:" + self,
			"-device", "virtio-net-pci,netdev=mgmt", // the only NIC: eth0
		},
	})
	ctx, cancel := context.WithTimeout(context.Background(), bootLimit)
	defer cancel()
	alive := func() {
		select {
		case <-v.done:
			t.Fatalf("qemu exited after %v: %v", time.Since(start).Round(time.Second), v.err)
		default:
		}
	}
	var c *agent.Client
	for c == nil {
		dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
		c, err = agent.Dial(dctx, v.sock)
		dcancel()
		if ctx.Err() != nil {
			t.Fatalf("no guest agent after %v: %v", bootLimit, err)
		}
		if c == nil {
			alive()
			time.Sleep(2 * time.Second)
		}
	}
	defer c.Close()

	// The agent answers once systemd started it (after the user setup).
	var st *agent.Status
	for {
		sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
		st, err = c.Status(sctx)
		scancel()
		if err == nil && st.HomeMounted && st.User != "" {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("agent status after %v: %+v, %v", bootLimit, st, err)
		}
		alive()
		time.Sleep(3 * time.Second)
	}
	agentUp := time.Since(start)
	t.Logf("agent answers with the user volume mounted after %v: %+v", agentUp.Round(time.Second), *st)
	if st.WorkspaceID != testWorkspace || st.User != login || !st.RootMounted || !st.HomeMounted || !st.HomeFormatted || len(st.Errors) != 0 {
		t.Errorf("agent status: workspace %q user %q (want %q from the metadata service) root %v home %v (formatted %v) errors %v",
			st.WorkspaceID, st.User, login, st.RootMounted, st.HomeMounted, st.HomeFormatted, st.Errors)
	}
	if st.ManagementAddress != "169.254.169.15" {
		t.Errorf("management address %q, want qemu's DHCP lease 169.254.169.15", st.ManagementAddress)
	}
	if st.KernelRelease != m.KernelVersion || st.AgentVersion != agent.Version {
		t.Errorf("kernel %q agent %q, want %q %q", st.KernelRelease, st.AgentVersion, m.KernelVersion, agent.Version)
	}

	// The desktop session: its autostart writes a marker into the user's home.
	marker := "/home/" + login + "/.cache/deskhost/session"
	var session string
	for {
		b, err := c.ReadFile(ctx, marker)
		if err == nil && len(b) > 0 {
			session = string(b)
			break
		}
		if err == nil {
			err = errors.New("empty")
		}
		if ctx.Err() != nil {
			t.Fatalf("no desktop session after %v (%s: %v)", bootLimit, marker, err)
		}
		alive()
		time.Sleep(3 * time.Second)
	}
	login2 := time.Since(start)
	t.Logf("boot to login (qemu start to the Xfce session's autostart) under TCG: %v; session: %s", login2.Round(time.Second), strings.TrimSpace(session))
	for _, want := range []string{"user=" + login + " ", "display=:0", "size=" + display} {
		if !strings.Contains(session, want) {
			t.Errorf("session marker %q lacks %q", session, want)
		}
	}

	// The home is on the user volume (the agent's /home is vdb's filesystem) and files
	// written there read back.
	if err := c.WriteFile(ctx, "/home/"+login+"/agent-test.txt", []byte("on the user volume\n")); err != nil {
		t.Error(err)
	}
	if b, err := c.ReadFile(ctx, "/sysroot/etc/deskhost/image"); err != nil || !strings.HasPrefix(string(b), "desktop-graphical ") {
		t.Errorf("root volume file through the agent: %q %v", b, err)
	}

	// Let Xfce finish drawing its panel and desktop (under TCG on a loaded machine the
	// panel's items come well after the session starts): screenshots until the screen
	// looks like a desktop, for up to two minutes.
	ppm := filepath.Join(v.dir, "screen.ppm")
	var (
		w, h int
		pix  []byte
	)
	for drawn := time.Now().Add(2 * time.Minute); ; {
		time.Sleep(5 * time.Second)
		if err := v.screendump(ppm); err != nil {
			t.Fatal(err)
		}
		if w, h, pix, err = readPPM(ppm); err != nil {
			t.Fatal(err)
		}
		if colors, top := colorStats(pix); colors >= 500 && top <= 0.97 || time.Now().After(drawn) {
			break
		}
	}
	t.Logf("desktop drawn %v after the session started", (time.Since(start) - login2).Round(time.Second))
	shot := screenshotPath(t)
	if err := writePNG(shot, w, h, pix); err != nil {
		t.Fatal(err)
	}
	colors, top := colorStats(pix)
	t.Logf("screenshot %s: %dx%d, %d colours, the commonest on %.1f%% of the pixels", shot, w, h, colors, 100*top)
	// A text console is 720x400 (VGA text mode) or the kernel's framebuffer console with a
	// handful of colours; a blank screen has one colour. Xfce's desktop (a plain backdrop
	// under ~92% of the screen), its panels, icons and anti-aliased text have thousands
	// (measured: 2978).
	if w != dispW || h != dispH {
		t.Errorf("screen is %dx%d, want %s (deskhost.display)", w, h, display)
	}
	if colors < 500 || top > 0.97 {
		t.Errorf("screen does not look like a desktop: %d colours, the commonest on %.1f%%", colors, 100*top)
	}

	// The agent powers the guest off through systemd.
	if err := c.Shutdown(ctx, false); err != nil {
		t.Fatal(err)
	}
	select {
	case <-v.done:
		t.Logf("powered off through the agent %v after login", (time.Since(start) - login2).Round(time.Second))
	case <-time.After(5 * time.Minute):
		t.Error("the guest did not power off within 5 minutes of the agent's shutdown")
	}
}

// screenshotPath is $DESKHOST_ARTIFACTS/graphical-desktop.png, else build/test-artifacts/
// in the checkout: the screenshot outlives the test.
func screenshotPath(t *testing.T) string {
	d := os.Getenv("DESKHOST_ARTIFACTS")
	if d == "" {
		d = filepath.Join(testenv.ModuleRoot(t), "build", "test-artifacts")
	}
	if err := os.MkdirAll(d, 0o755); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(d, "graphical-desktop.png")
}

func writePNG(path string, w, h int, pix []byte) error {
	im := stdimage.NewRGBA(stdimage.Rect(0, 0, w, h))
	for i := 0; i < w*h; i++ {
		im.Set(i%w, i/w, color.RGBA{pix[3*i], pix[3*i+1], pix[3*i+2], 0xff})
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, im); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// colorStats returns the number of distinct colours and the share of the commonest.
func colorStats(pix []byte) (int, float64) {
	count := map[[3]byte]int{}
	for i := 0; i+2 < len(pix); i += 3 {
		count[[3]byte{pix[i], pix[i+1], pix[i+2]}]++
	}
	top := 0
	for _, n := range count {
		top = max(top, n)
	}
	if len(pix) < 3 {
		return 0, 1
	}
	return len(count), float64(top) / float64(len(pix)/3)
}
