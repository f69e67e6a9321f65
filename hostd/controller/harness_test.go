package controller

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/agent"
	"deskhost/hostd/confine"
	"deskhost/hostd/keystore"
	"deskhost/hostd/memscrub"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/virt"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
	"deskhost/internal/hostconfig"
	"deskhost/internal/testenv"
)

// A harness is a real hostd core — bbolt store, service, controller — on the real
// libvirtd that `make test` runs, booting the real desktop image under TCG.
type harness struct {
	t      testing.TB
	dir    string
	store  store.Store
	svc    *service.Service
	ctl    *Controller
	conn   *virt.Conn
	pool   string
	mgmt   string
	pri    string
	cancel context.CancelFunc
	done   chan error
}

const (
	testImage     = "wsi-desktop001"
	brokenImage   = "wsi-broken0001" // the same image with no init: its guest never answers
	testBundle    = "wsb-value00001"
	brokenBundle  = "wsb-broken0001"
	testAutoStop  = "wsb-value00002"
	testDirectory = "d-0123456789"
	testMemoryMiB = 256
)

func testUsers() []catalog.User {
	var us []catalog.User
	for _, n := range []string{"alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"} {
		us = append(us, catalog.User{UserName: n, FirstName: strings.ToUpper(n[:1]) + n[1:], LastName: "Test", Email: n + "@example.com"})
	}
	return us
}

func newHarness(t testing.TB, tweak func(*Config), hooks func(*Controller)) *harness {
	t.Helper()
	return newHarnessOn(t, nil, tweak, hooks)
}

// newHarnessOn is a harness on st (nil: a bbolt file of its own).
func newHarnessOn(t testing.TB, st store.Store, tweak func(*Config), hooks func(*Controller)) *harness {
	t.Helper()
	sock := testenv.LibvirtSocket(t)
	img, err := desktopimage.Load(testenv.DesktopImage(t))
	if err != nil {
		t.Fatal(err)
	}
	// Short names: unix socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "dh")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	suffix := catalog.NewID(catalog.KindDirectory)[2:8]
	h := &harness{t: t, dir: dir, pool: "dhtest-" + suffix, mgmt: "dhm" + suffix, pri: "dhp" + suffix}
	testenv.Bridge(t, h.mgmt)
	testenv.Bridge(t, h.pri)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if h.conn, err = virt.Dial(ctx, sock); err != nil {
		t.Fatal(err)
	}
	if h.store = st; st == nil {
		if h.store, err = store.OpenBolt(filepath.Join(dir, "store.db")); err != nil {
			t.Fatal(err)
		}
	}
	hw := map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: testMemoryMiB}}
	// qemu runs as libvirt-qemu (scripts/libvirtrun's qemu.conf); members of nogroup stand
	// in for zeroclient's gateway on the display. cgroup limits where the host offers them
	// (cgroup v2 with cpu and memory; the appliance VM test proves them where this machine
	// cannot).
	guests, err := confine.Lookup("libvirt-qemu", "", "nogroup", confine.CheckLimits() == nil)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := memscrub.Check()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // give back the huge pages the WorkSpaces added to the pool
		if now, err := memscrub.Check(); err == nil {
			_ = memscrub.ShrinkHugePages(now.HugePages.Total - pool.HugePages.Total)
		}
	})
	legacy := &hostconfig.LegacyCatalog{
		Images: []hostconfig.Sourced[catalog.Image]{
			{From: "images[0]", Item: catalog.Image{ID: testImage, Name: "desktop", OS: catalog.Linux, Dir: img.Dir}},
			{From: "images[1]", Item: catalog.Image{ID: brokenImage, Name: "broken", OS: catalog.Linux, Dir: img.Dir}},
		},
		Bundles: []hostconfig.Sourced[catalog.Bundle]{
			{From: "bundles[0]", Item: catalog.Bundle{ID: testBundle, Name: "Value", ImageID: testImage, ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}},
			{From: "bundles[1]", Item: catalog.Bundle{ID: brokenBundle, Name: "Broken", ImageID: brokenImage, ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}},
		},
		Directories: []hostconfig.Sourced[catalog.Directory]{{From: "directories[0]", Item: catalog.Directory{ID: testDirectory, Name: "corp.example.com", Users: testUsers()}}},
	}
	keys, err := keystore.LoadOrCreateMaster(filepath.Join(dir, keystore.MasterFile))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Keys:  keys,
		Store: h.store,
		Conn:  h.conn,
		Owner: "test-" + suffix,
		Images: StaticImages{
			testImage:   {Kernel: img.Kernel, Initrd: img.Initrd, Root: img.Root, Cmdline: img.Manifest.Cmdline},
			brokenImage: {Kernel: img.Kernel, Initrd: img.Initrd, Root: img.Root, Cmdline: img.Manifest.Cmdline + " rdinit=/nonexistent"},
		},
		ComputeTypes:        hw,
		DataDir:             dir,
		Pool:                h.pool,
		DomainType:          "qemu",
		ManagementBridge:    h.mgmt,
		PrimaryBridge:       h.pri,
		ProvisionTimeout:    3 * time.Minute,
		ShutdownTimeout:     20 * time.Second,
		HealthInterval:      2 * time.Second,
		HealthMisses:        3,
		TerminatedRetention: time.Hour,
		Preflight: func() error {
			r, err := memscrub.Check()
			if err != nil {
				return err
			}
			return r.Refusal(false)
		},
		HugePages: true,
		Confine:   guests,
		DialAgent: DialAgent,
		Log:       slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if tweak != nil {
		tweak(&cfg)
	}
	h.ctl = New(cfg)
	if hooks != nil {
		hooks(h.ctl)
	}
	h.svc = service.New(h.store, service.Config{ComputeTypes: cfg.ComputeTypes, WorkspaceQuota: 20, Host: cfg.Owner, Keys: cfg.Keys, ImageDir: filepath.Join(dir, "images")}, h.ctl, cfg.Now, cfg.Log)
	if _, err := h.svc.ImportCatalog(context.Background(), legacy, "test"); err != nil {
		t.Fatal(err)
	}
	h.start()
	t.Cleanup(h.cleanup)
	return h
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.done = make(chan error, 1)
	go func() { h.done <- h.ctl.Run(ctx) }()
}

// cleanup removes every domain and volume the test made, then the pool.
func (h *harness) cleanup() {
	h.cancel()
	<-h.done
	h.ctl.WaitIdle()
	h.ctl.Close()
	doms, _ := h.conn.Domains(Prefix)
	for _, d := range doms {
		if strings.HasPrefix(d, Prefix) && h.owns(d) {
			_ = h.conn.Destroy(d)
			_ = h.conn.Undefine(d)
		}
	}
	vols, _ := h.conn.Volumes(h.pool, "")
	for _, v := range vols {
		_ = h.conn.DeleteVolume(h.pool, v.Name)
	}
	_ = h.conn.DestroyPool(h.pool)
	h.store.Close()
	h.conn.Close()
}

// owns reports whether domain d belongs to this harness (its disks are in our data dir).
func (h *harness) owns(d string) bool {
	x, err := h.conn.XML(d)
	if err != nil || x.Devices == nil {
		return false
	}
	for _, disk := range x.Devices.Disks {
		if disk.Source != nil && disk.Source.File != nil && strings.HasPrefix(disk.Source.File.File, h.dir) {
			return true
		}
	}
	return false
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func (h *harness) create(user string, props ...func(*service.CreateRequest)) workspace.Workspace {
	h.t.Helper()
	r := service.CreateRequest{DirectoryID: testDirectory, UserName: user, BundleID: testBundle}
	for _, p := range props {
		p(&r)
	}
	pending, failed, err := h.svc.CreateWorkspaces(context.Background(), []service.CreateRequest{r})
	if err != nil || len(failed) > 0 || len(pending) != 1 {
		h.t.Fatalf("create %s: %v %+v", user, err, failed)
	}
	if pending[0].State != workspace.Pending {
		h.t.Fatalf("new WorkSpace is %s, want PENDING", pending[0].State)
	}
	return pending[0]
}

func autoStop(r *service.CreateRequest) { r.RunningMode = workspace.AutoStop }

func (h *harness) get(id string) workspace.Workspace {
	h.t.Helper()
	w, err := h.svc.Get(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return w
}

// waitState waits for id to reach want, failing at once on an unexpected ERROR or
// TERMINATED (a failed migration's target). It records
// the states seen on the way.
func (h *harness) waitState(id string, want workspace.State, within time.Duration) []workspace.State {
	h.t.Helper()
	deadline := time.Now().Add(within)
	var seen []workspace.State
	for {
		w := h.get(id)
		if len(seen) == 0 || seen[len(seen)-1] != w.State {
			seen = append(seen, w.State)
		}
		if w.State == want {
			return seen
		}
		if w.State == workspace.Error && want != workspace.Error {
			h.t.Fatalf("%s went to ERROR: %s: %s (states %v; serial log %s)", id, w.ErrorCode, w.ErrorMessage, seen, h.serialTail(id))
		}
		if w.State == workspace.Terminated && want != workspace.Terminated { // final
			h.t.Fatalf("%s is %s, waiting for %s: %s: %s (states %v)", id, w.State, want, w.ErrorCode, w.ErrorMessage, seen)
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%s is %s after %s, want %s (states %v; serial log %s)", id, w.State, within, want, seen, h.serialTail(id))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (h *harness) serialTail(id string) string {
	b, _ := os.ReadFile(h.ctl.SerialLog(id))
	if len(b) > 1500 {
		b = b[len(b)-1500:]
	}
	return fmt.Sprintf("\n---\n%s\n---", b)
}

func (h *harness) agent(id string) *agent.Client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, h.ctl.AgentSocket(id))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}

func (h *harness) domainState(id string) virt.DomainState {
	h.t.Helper()
	st, err := h.conn.State(id)
	if err != nil {
		h.t.Fatal(err)
	}
	return st
}

func (h *harness) volumes(id string) map[string]virt.Volume {
	h.t.Helper()
	vs, err := h.conn.Volumes(h.pool, id)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string]virt.Volume{}
	for _, v := range vs {
		out[v.Name] = v
	}
	return out
}

func qemuPID(t testing.TB, id string) int {
	t.Helper()
	pid, _, err := virt.QemuProcess(id)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}
