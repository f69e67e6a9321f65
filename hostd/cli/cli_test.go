package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/hostd/api"
	"deskhost/hostd/fleet"
	"deskhost/hostd/keystore"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
)

const (
	dirID     = "d-0123456789"
	bundleStd = "wsb-standard01"
	bundleVal = "wsb-value00001"
	keyID     = "AKIDCLITEST000001"
	keySecret = "cli-test-secret-0000000000000000"
)

type waker struct {
	mu  sync.Mutex
	ids []string
}

func (w *waker) Wake(id string) { w.mu.Lock(); w.ids = append(w.ids, id); w.mu.Unlock() }

type fixture struct {
	t      *testing.T
	store  *store.Bolt
	svc    *service.Service
	socket string
	url    string
	cert   string
}

// newFixture runs a real service over a real bbolt store behind the real API, on a unix
// socket and on HTTPS with a self-signed certificate.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	cfg := service.Config{
		ComputeTypes:   map[catalog.ComputeType]catalog.Hardware{catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: 4096}, catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 2048}},
		WorkspaceQuota: 10,
		ImageDir:       filepath.Join(dir, "images"),
	}
	if cfg.Keys, err = keystore.LoadOrCreateMaster(filepath.Join(t.TempDir(), keystore.MasterFile)); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := service.New(st, cfg, &waker{}, nil, log)
	// The shared fixture's catalog comes in as a host config's would (the import); the
	// catalog commands build theirs with the CLI (TestCLICatalogCommands).
	legacy := &hostconfig.LegacyCatalog{
		Images: []hostconfig.Sourced[catalog.Image]{{From: "images[0]", Item: catalog.Image{ID: "wsi-linux000001", Name: "Debian", OS: catalog.Linux, Dir: "/nonexistent"}}},
		Bundles: []hostconfig.Sourced[catalog.Bundle]{
			{From: "bundles[0]", Item: catalog.Bundle{ID: bundleStd, Name: "Standard Linux", Description: "2 vCPU, 4 GiB", ImageID: "wsi-linux000001", ComputeType: catalog.ComputeStandard, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 50}},
			{From: "bundles[1]", Item: catalog.Bundle{ID: bundleVal, Name: "Value Linux", ImageID: "wsi-linux000001", ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10}},
		},
		Directories: []hostconfig.Sourced[catalog.Directory]{{From: "directories[0]", Item: catalog.Directory{ID: dirID, Name: "corp.example.com", Alias: "corp", RegistrationCode: "SLiad+KX7B2Q",
			Users: []catalog.User{{UserName: "alice", Email: "a@example.com"}, {UserName: "bob", Email: "b@example.com"}, {UserName: "carol", Email: "c@example.com"}}}}},
	}
	if _, err := svc.ImportCatalog(context.Background(), legacy, "test"); err != nil {
		t.Fatal(err)
	}
	srv := api.New(svc, api.Options{
		AccessKeys: []hostconfig.AccessKey{{ID: keyID, Secret: keySecret, Name: "cli-test"}},
		Throttle:   hostconfig.Throttle{Rate: 1000, Burst: 1000},
		Logger:     log,
	})
	f := &fixture{t: t, store: st, svc: svc, socket: filepath.Join(dir, "run", "hostd.sock")}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })

	ln, err := api.ListenUnix(f.socket)
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); srv.ServeUnixListener(ctx, ln) }()

	cert, certPath, err := api.LoadOrCreateCertificate("", "", filepath.Join(dir, "tls"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); srv.ServeTLSListener(ctx, tl, api.TLSConfig(cert)) }()
	f.url, f.cert = "https://"+tl.Addr().String(), certPath
	return f
}

// cli runs one command over the socket.
func (f *fixture) cli(args ...string) (code int, stdout, stderr string) {
	return f.cliRaw(append(args, "--socket", f.socket)...)
}

func (f *fixture) cliRaw(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	if os.Getenv("HOSTD_CLI_TEST_SHOW") != "" { // to read the output as an operator would
		f.t.Logf("$ hostd %s\n%s%s(exit %d)", strings.Join(args, " "), out.String(), errb.String(), code)
	}
	return code, out.String(), errb.String()
}

func (f *fixture) setState(id string, s workspace.State, fail ...string) {
	f.t.Helper()
	err := f.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		if len(fail) == 2 {
			w.Fail(fail[0], fail[1], time.Now())
		} else {
			w.SetState(s, time.Now())
		}
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) state(id string) workspace.State {
	f.t.Helper()
	w, err := f.svc.Get(id)
	if err != nil {
		f.t.Fatal(err)
	}
	return w.State
}

func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("this test needs root (%s), and CI must run it", why)
	}
	t.Skipf("skipped: needs root (%s); run as root or with CI=true to make it fail instead", why)
}

var wsIDPattern = regexp.MustCompile(`ws-[0-9a-z]{10}`)

// row reports whether out has a line with all of cols in order, separated by spaces.
func hasRow(out string, cols ...string) bool {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		i := 0
		for _, w := range f {
			if i < len(cols) && w == cols[i] {
				i++
			}
		}
		if i == len(cols) {
			return true
		}
	}
	return false
}

func TestCLIOverUnixSocket(t *testing.T) {
	requireRoot(t, "hostd's socket accepts only root peers")
	f := newFixture(t)

	code, out, errs := f.cli("directories")
	if code != 0 || !hasRow(out, "DIRECTORY", "NAME", "ALIAS") || !hasRow(out, dirID, "corp.example.com", "corp", "SLiad+KX7B2Q", "REGISTERED") {
		t.Errorf("directories: %d\n%s%s", code, out, errs)
	}
	code, out, errs = f.cli("bundles")
	if code != 0 || !hasRow(out, bundleStd, "Standard", "Linux", "STANDARD", "80", "50", "wsi-linux000001") {
		t.Errorf("bundles: %d\n%s%s", code, out, errs)
	}
	code, out, _ = f.cli("workspaces")
	if code != 0 || !strings.Contains(out, "No WorkSpaces.") {
		t.Errorf("empty list: %d %q", code, out)
	}

	// create
	code, out, errs = f.cli("create", "--directory", dirID, "--user", "alice", "--bundle", bundleStd)
	alice := wsIDPattern.FindString(out)
	if code != 0 || alice == "" || !hasRow(out, alice, "PENDING", "alice", dirID, bundleStd, "ALWAYS_ON") {
		t.Fatalf("create: %d\n%s%s", code, out, errs)
	}
	code, out, errs = f.cli("create", "--directory", dirID, "--user", "bob", "--bundle", bundleVal, "--running-mode", "auto-stop", "--autostop-hours", "3")
	bob := wsIDPattern.FindString(out)
	if code != 0 || bob == "" || !hasRow(out, bob, "PENDING", "bob", "AUTO_STOP", "(3", "hours)") {
		t.Fatalf("create AUTO_STOP: %d\n%s%s", code, out, errs)
	}
	code, out, errs = f.cli("create", "--directory", dirID, "--user", "carol", "--bundle", "wsb-nosuchbndl")
	if code != 1 || !strings.Contains(errs, "cannot create a WorkSpace for carol in "+dirID+": ResourceNotFoundException: bundle wsb-nosuchbndl does not exist") {
		t.Errorf("create with an unknown bundle: %d %q %q", code, out, errs)
	}
	code, _, errs = f.cli("create", "--directory", dirID, "--user", "carol")
	if code != 2 || !strings.Contains(errs, "missing --bundle") || !strings.Contains(errs, "usage: hostd create") {
		t.Errorf("create without --bundle: %d %q", code, errs)
	}
	code, _, errs = f.cli("create", "--directory", "d-zz", "--user", "carol", "--bundle", bundleStd)
	if code != 1 || !strings.Contains(errs, "InvalidParameterValuesException: Workspaces[0].DirectoryId") {
		t.Errorf("create with a malformed directory id: %d %q", code, errs)
	}

	// list, filters, JSON
	code, out, _ = f.cli("workspaces")
	// A PENDING WorkSpace's user session is UNKNOWN, as AWS says of one not running.
	if code != 0 || !hasRow(out, "WORKSPACE", "STATE", "USER", "SESSION") || !hasRow(out, alice, "PENDING", "alice", "UNKNOWN") || !hasRow(out, bob, "PENDING", "bob", "UNKNOWN") {
		t.Errorf("workspaces:\n%s", out)
	}
	code, out, _ = f.cli("workspaces", "--user", "BOB")
	if code != 0 || strings.Contains(out, alice) || !strings.Contains(out, bob) {
		t.Errorf("workspaces --user:\n%s", out)
	}
	code, out, _ = f.cli("workspaces", "--bundle", bundleStd, "--json")
	var list struct{ Workspaces []map[string]any }
	if err := json.Unmarshal([]byte(out), &list); code != 0 || err != nil || len(list.Workspaces) != 1 || list.Workspaces[0]["WorkspaceId"] != alice {
		t.Errorf("workspaces --json: %d %v\n%s", code, err, out)
	}
	if strings.Contains(out, "null") || strings.Contains(out, `""`) {
		t.Errorf("JSON has nulls or empty strings:\n%s", out)
	}

	// describe
	code, out, _ = f.cli("describe", bob)
	for _, want := range [][]string{{"WorkSpace:", bob}, {"State:", "PENDING"}, {"User:", "bob"}, {"Running", "mode:", "AUTO_STOP", "(3", "hours)"},
		{"Root", "volume:", "80", "GiB"}, {"User", "volume:", "10", "GiB"}, {"Protocols:", "PCOIP"}} {
		if !hasRow(out, want...) {
			t.Errorf("describe lacks %v:\n%s", want, out)
		}
	}
	code, out, _ = f.cli("describe", alice, "--json")
	var one map[string]any
	if err := json.Unmarshal([]byte(out), &one); code != 0 || err != nil || one["WorkspaceId"] != alice || one["State"] != "PENDING" {
		t.Errorf("describe --json: %d %v\n%s", code, err, out)
	}
	code, _, errs = f.cli("describe", "ws-doesnotexist")
	if code != 1 || !strings.Contains(errs, "ResourceNotFoundException: WorkSpace ws-doesnotexist does not exist") {
		t.Errorf("describe unknown: %d %q", code, errs)
	}

	// wait: progress to AVAILABLE, as the controller moves it.
	go func() {
		time.Sleep(300 * time.Millisecond)
		f.setState(alice, workspace.Available)
	}()
	code, out, errs = f.cli("wait", alice, "--state", "available", "--interval", "50ms", "--timeout", "10s")
	if code != 0 || !hasRow(out, alice, "PENDING") || !hasRow(out, alice, "AVAILABLE") || strings.Index(out, "PENDING") > strings.Index(out, "AVAILABLE") {
		t.Errorf("wait: %d\n%s%s", code, out, errs)
	}
	// wait fails on ERROR with the reason, and on timeout.
	go func() {
		time.Sleep(200 * time.Millisecond)
		f.setState(bob, "", "ProvisionTimeout", "the guest agent did not answer within 20m0s")
	}()
	code, out, errs = f.cli("wait", bob, "--state", "AVAILABLE", "--interval", "50ms", "--timeout", "10s")
	if code != 1 || !hasRow(out, bob, "ERROR") || !strings.Contains(errs, bob+" went to ERROR while waiting for AVAILABLE: ProvisionTimeout: the guest agent did not answer within 20m0s") {
		t.Errorf("wait on ERROR: %d\n%s%s", code, out, errs)
	}
	code, _, errs = f.cli("wait", alice, "--state", "STOPPED", "--interval", "50ms", "--timeout", "200ms")
	if code != 1 || !strings.Contains(errs, "timed out after 200ms waiting for "+alice+" to be STOPPED; it is AVAILABLE") {
		t.Errorf("wait timeout: %d %q", code, errs)
	}
	code, _, errs = f.cli("wait", alice, "--state", "SLEEPING")
	if code != 2 || !strings.Contains(errs, "want one of PENDING, AVAILABLE") {
		t.Errorf("wait with a bad state: %d %q", code, errs)
	}

	// Batch operations report each WorkSpace and fail if any failed.
	code, out, errs = f.cli("reboot", alice, "ws-doesnotexist")
	if code != 1 || !hasRow(out, alice, "reboot", "requested") || !hasRow(out, "ws-doesnotexist", "FAILED:", "ResourceNotFoundException:") ||
		!strings.Contains(errs, "1 of 2 WorkSpaces could not be rebooted") {
		t.Errorf("reboot: %d\n%s%s", code, out, errs)
	}
	if s := f.state(alice); s != workspace.Rebooting {
		t.Errorf("alice is %s after reboot", s)
	}
	f.setState(alice, workspace.Available)
	f.setState(bob, workspace.Available)
	code, out, errs = f.cli("stop", bob, alice)
	if code != 1 || !hasRow(out, bob, "stop", "requested") || !hasRow(out, alice, "FAILED:", "OperationNotSupportedException:") {
		t.Errorf("stop: %d\n%s%s", code, out, errs)
	}
	f.setState(bob, workspace.Stopped)
	code, out, errs = f.cli("start", bob)
	if code != 0 || !hasRow(out, bob, "start", "requested") || errs != "" {
		t.Errorf("start: %d\n%s%s", code, out, errs)
	}
	f.setState(bob, workspace.Available)

	// maintenance and modify
	code, out, errs = f.cli("maintenance", alice, "on")
	if code != 0 || !strings.Contains(out, alice+": maintenance on (ADMIN_MAINTENANCE)") || f.state(alice) != workspace.AdminMaintenance {
		t.Errorf("maintenance on: %d %q %q", code, out, errs)
	}
	code, out, _ = f.cli("maintenance", alice, "off")
	if code != 0 || f.state(alice) != workspace.Available {
		t.Errorf("maintenance off: %d %q", code, out)
	}
	code, _, errs = f.cli("maintenance", alice, "maybe")
	if code != 2 || !strings.Contains(errs, `"maybe": want on or off`) {
		t.Errorf("maintenance maybe: %d %q", code, errs)
	}
	code, out, errs = f.cli("modify", alice, "--running-mode", "AUTO_STOP", "--autostop-hours", "2")
	if code != 0 || !strings.Contains(out, alice+": AVAILABLE, running mode AUTO_STOP (2 hours), compute") {
		t.Errorf("modify: %d %q %q", code, out, errs)
	}
	code, _, errs = f.cli("modify", alice)
	if code != 2 || !strings.Contains(errs, "give --running-mode, --autostop-hours, --compute, --root-gib or --user-gib") {
		t.Errorf("modify without changes: %d %q", code, errs)
	}
	// A volume change in the guide's first 6 h: hostd's refusal, the guide's text.
	code, _, errs = f.cli("modify", alice, "--user-gib", "100")
	if code != 1 || !strings.Contains(errs, "OperationNotSupportedException") || !strings.Contains(errs, workspace.MsgVolumeLaunchWait) {
		t.Errorf("modify --user-gib at launch: %d %q", code, errs)
	}
	code, _, errs = f.cli("modify", alice, "--user-gib", "5000")
	if code != 2 || !strings.Contains(errs, "--user-gib 5000: want 1 to 2000") {
		t.Errorf("modify --user-gib 5000: %d %q", code, errs)
	}
	code, _, errs = f.cli("modify", "ws-doesnotexist", "--running-mode", "ALWAYS_ON")
	if code != 1 || !strings.Contains(errs, "ResourceNotFoundException: WorkSpace ws-doesnotexist does not exist") {
		t.Errorf("modify unknown: %d %q", code, errs)
	}

	// migrate: bob (AVAILABLE, bundle Value) to Standard
	code, _, errs = f.cli("migrate", bob)
	if code != 2 || !strings.Contains(errs, "--bundle is required") {
		t.Errorf("migrate without --bundle: %d %q", code, errs)
	}
	code, _, errs = f.cli("migrate", bob, "--bundle", bundleVal)
	if code != 1 || !strings.Contains(errs, "InvalidParameterValuesException") || !strings.Contains(errs, "must be different") || f.state(bob) != workspace.Available {
		t.Errorf("migrate to the same bundle: %d %q", code, errs)
	}
	code, out, errs = f.cli("migrate", bob, "--bundle", bundleStd)
	if code != 0 || !strings.Contains(out, bob+": migrating to "+bundleStd+" as ws-") || f.state(bob) != workspace.Updating {
		t.Errorf("migrate: %d %q %q", code, out, errs)
	}

	// terminate, and wait for TERMINATING
	code, out, _ = f.cli("terminate", alice)
	if code != 0 || !hasRow(out, alice, "terminate", "requested") || f.state(alice) != workspace.Terminating {
		t.Errorf("terminate: %d\n%s", code, out)
	}
	code, out, _ = f.cli("wait", alice, "--state", "TERMINATING", "--interval", "50ms", "--timeout", "5s")
	if code != 0 || !hasRow(out, alice, "TERMINATING") {
		t.Errorf("wait TERMINATING: %d\n%s", code, out)
	}

	// create --wait
	go func() {
		for i := 0; i < 100; i++ {
			time.Sleep(50 * time.Millisecond)
			ws, _, _ := f.svc.DescribeWorkspaces(context.Background(), service.DescribeFilter{DirectoryID: dirID, UserName: "carol"})
			if len(ws) == 1 {
				time.Sleep(200 * time.Millisecond)
				f.setState(ws[0].ID, workspace.Available)
				return
			}
		}
	}()
	code, out, errs = f.cli("create", "--directory", dirID, "--user", "carol", "--bundle", bundleStd, "--wait", "--interval", "50ms", "--timeout", "10s")
	carol := wsIDPattern.FindString(out)
	if code != 0 || !hasRow(out, carol, "PENDING") || !hasRow(out, carol, "AVAILABLE") {
		t.Errorf("create --wait: %d\n%s%s", code, out, errs)
	}
}

func TestCLIOverHTTPS(t *testing.T) {
	f := newFixture(t)
	code, out, errs := f.cliRaw("directories", "--endpoint", f.url, "--ca-file", f.cert, "--access-key", keyID, "--secret-key", keySecret)
	if code != 0 || !hasRow(out, dirID, "corp.example.com") {
		t.Errorf("directories over HTTPS: %d\n%s%s", code, out, errs)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", keyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", keySecret)
	code, out, errs = f.cliRaw("create", "--endpoint", f.url, "--ca-file", f.cert, "--directory", dirID, "--user", "alice", "--bundle", bundleStd)
	if code != 0 || wsIDPattern.FindString(out) == "" {
		t.Errorf("create over HTTPS with env credentials: %d\n%s%s", code, out, errs)
	}
	code, _, errs = f.cliRaw("workspaces", "--endpoint", f.url, "--ca-file", f.cert, "--secret-key", "not-the-right-secret-000000000000")
	if code != 1 || !strings.Contains(errs, "hostd workspaces: InvalidSignatureException: The request signature we calculated does not match") {
		t.Errorf("bad secret: %d %q", code, errs)
	}
	code, _, errs = f.cliRaw("workspaces", "--endpoint", f.url)
	if code != 1 || !strings.Contains(errs, "cannot verify hostd's certificate") || !strings.Contains(errs, "--ca-file") {
		t.Errorf("unpinned certificate: %d %q", code, errs)
	}
	code, _, errs = f.cliRaw("workspaces", "--endpoint", strings.Replace(f.url, "https", "http", 1))
	if code != 2 || !strings.Contains(errs, "HTTPS only") {
		t.Errorf("http endpoint: %d %q", code, errs)
	}
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	code, _, errs = f.cliRaw("workspaces", "--endpoint", f.url, "--ca-file", f.cert)
	if code != 2 || !strings.Contains(errs, "--endpoint needs an access key") {
		t.Errorf("no secret: %d %q", code, errs)
	}
}

func TestCLIUsageAndUnreachable(t *testing.T) {
	f := &fixture{t: t}
	code, out, _ := f.cliRaw("help")
	for _, c := range []string{"workspaces", "describe", "create", "reboot", "stop", "start", "terminate", "maintenance", "modify", "migrate", "wait", "bundles", "directories"} {
		if !strings.Contains(out, "  "+c+" ") {
			t.Errorf("help lacks %s:\n%s", c, out)
		}
	}
	if code != 0 {
		t.Errorf("help exit %d", code)
	}
	code, out, _ = f.cliRaw("help", "create")
	if code != 0 || !strings.Contains(out, "--autostop-hours") || !strings.Contains(out, "--wait") {
		t.Errorf("help create: %d\n%s", code, out)
	}
	code, _, errs := f.cliRaw("frobnicate")
	if code != 2 || !strings.Contains(errs, `unknown command "frobnicate"`) {
		t.Errorf("unknown command: %d %q", code, errs)
	}
	code, _, errs = f.cliRaw()
	if code != 2 || !strings.Contains(errs, "usage: hostd <command>") {
		t.Errorf("no command: %d %q", code, errs)
	}
	code, _, errs = f.cliRaw("describe")
	if code != 2 || !strings.Contains(errs, "expected WS_ID") {
		t.Errorf("describe without id: %d %q", code, errs)
	}
	code, _, errs = f.cliRaw("workspaces", "--nonsense")
	if code != 2 || !strings.Contains(errs, "flag provided but not defined: -nonsense") {
		t.Errorf("bad flag: %d %q", code, errs)
	}
	sock := filepath.Join(t.TempDir(), "nothing.sock")
	start := time.Now()
	code, _, errs = f.cliRaw("workspaces", "--socket", sock)
	if code != 1 || !strings.Contains(errs, "cannot reach hostd at unix socket "+sock) || !strings.Contains(errs, "no such file or directory") {
		t.Errorf("unreachable: %d %q", code, errs)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("an unreachable socket took %v to report (retried?)", d)
	}
}

// TestCLICatalogCommands: an operator builds and changes the catalog with the CLI over the
// socket: a directory defined from a file (its secret never shown back), registered, its
// users and device access changed; an IP group created, changed, associated; tags; an
// image registered and a bundle made from it, updated and deleted. Errors name the AWS
// exception and exit 1.
func TestCLICatalogCommands(t *testing.T) {
	requireRoot(t, "hostd's socket accepts only root peers")
	f := newFixture(t)
	dir := t.TempDir()
	def := filepath.Join(dir, "ad.yaml")
	os.WriteFile(def, []byte(`id: d-00000000f1
name: ad.example.com
alias: ad
login:
  type: ldap
  ldap: {url: "ldaps://dc.example.com", bindDN: "cn=svc", bindPassword: "do-not-show-me", userBase: "dc=ad"}
users: [{userName: zed, email: zed@example.com}]
`), 0o600)
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := f.cli(args...)
		if code != 0 {
			t.Fatalf("hostd %s: %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	refused := func(want string, args ...string) {
		t.Helper()
		code, out, errs := f.cli(args...)
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("hostd %s: %d %q %q, want exit 1 with %q", strings.Join(args, " "), code, out, errs, want)
		}
	}
	if out := must("directory", "put", "--file", def); !strings.Contains(out, "d-00000000f1: directory defined") {
		t.Errorf("directory put: %q", out)
	}
	if out := must("directory", "put", "--file", def); !strings.Contains(out, "definition replaced") {
		t.Errorf("directory put again: %q", out)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("id: d-00000000f2\nname: x.example.com\nlogin: {type: ldap, ldapp: {}}\n"), 0o600)
	refused("ldapp", "directory", "put", "--file", bad)
	out := must("directory", "show", "d-00000000f1")
	if strings.Contains(out, "do-not-show-me") || !strings.Contains(out, "NOT_REGISTERED") || !strings.Contains(out, "bindDN: cn=svc") {
		t.Errorf("directory show:\n%s", out)
	}
	if out := must("directories", "register", "d-00000000f1", "--self-service"); !strings.Contains(out, "registration code SLiad+") {
		t.Errorf("register: %q", out)
	}
	if out := must("directories"); !hasRow(out, "d-00000000f1", "ad.example.com", "ad", "ldap") || !hasRow(out, dirID, "corp.example.com") {
		t.Errorf("directories:\n%s", out)
	}
	must("directories", "access", "d-00000000f1", "--allow", "web,linux", "--deny", "zeroclient")
	if code, _, errs := f.cli("directories", "access", "d-00000000f1", "--allow", "toaster"); code != 2 || !strings.Contains(errs, `device type "toaster"`) {
		t.Errorf("an unknown device type: %d %q", code, errs)
	}
	if code, out, _ := f.cliRaw("help", "directories", "access"); code != 0 || !strings.Contains(out, "--allow") {
		t.Errorf("help directories access: %d\n%s", code, out)
	}
	must("users", "add", "--directory", "d-00000000f1", "--user", "yan", "--email", "yan@example.com", "--first", "Yan")
	if out := must("users", "--directory", "d-00000000f1"); !hasRow(out, "yan", "Yan", "-", "yan@example.com") || !hasRow(out, "zed") {
		t.Errorf("users:\n%s", out)
	}
	refused("ResourceAlreadyExistsException", "users", "add", "--directory", "d-00000000f1", "--user", "YAN")
	must("users", "remove", "--directory", "d-00000000f1", "yan")

	gid := strings.TrimSpace(must("ipgroups", "create", "--name", "office", "--description", "HQ", "--rule", "203.0.113.0/24=HQ", "--rule", "198.51.100.7"))
	if !strings.HasPrefix(gid, "wsipg-") {
		t.Fatalf("ipgroups create: %q", gid)
	}
	must("ipgroups", "authorize", gid, "--rule", "10.0.0.0/8=lan")
	must("ipgroups", "revoke", gid, "198.51.100.7/32")
	if out := must("ipgroups"); !hasRow(out, gid, "office", "203.0.113.0/24", "(HQ),", "10.0.0.0/8", "(lan)", "HQ") {
		t.Errorf("ipgroups:\n%s", out)
	}
	must("ipgroups", "update", gid, "--rule", "192.0.2.0/24")
	must("ipgroups", "associate", "d-00000000f1", gid)
	refused("ResourceAssociatedException", "ipgroups", "delete", gid)
	must("ipgroups", "disassociate", "d-00000000f1", gid)
	must("ipgroups", "delete", gid)

	must("tags", "add", "d-00000000f1", "team=infra", "Ort=Zürich")
	if out := must("tags", "d-00000000f1"); !hasRow(out, "Ort", "Zürich") || !hasRow(out, "team", "infra") {
		t.Errorf("tags:\n%s", out)
	}
	refused("reserved", "tags", "add", "d-00000000f1", "aws:x=y")
	must("tags", "remove", "d-00000000f1", "team")

	img := filepath.Join(dir, "image")
	os.MkdirAll(img, 0o755)
	for _, n := range []string{"vmlinux", "initrd.img", "root.qcow2"} {
		os.WriteFile(filepath.Join(img, n), []byte("x"), 0o644)
	}
	os.WriteFile(filepath.Join(img, "image.json"), []byte(`{"name":"desk","os":"linux","kernel":"vmlinux","initrd":"initrd.img","root":"root.qcow2"}`), 0o644)
	iid := strings.TrimSpace(must("images", "register", "--dir", img, "--description", "test image"))
	if out := must("images"); !hasRow(out, iid, "desk", "LINUX", "AVAILABLE") {
		t.Errorf("images:\n%s", out)
	}
	bid := strings.TrimSpace(must("bundles", "create", "--name", "Desk-Value", "--description", "test", "--image", iid, "--compute", "value", "--user-gib", "10"))
	if out := must("bundles"); !hasRow(out, bid, "Desk-Value", "VALUE", "80", "10", iid) {
		t.Errorf("bundles:\n%s", out)
	}
	must("bundles", "update", bid, "--image", "wsi-linux000001")
	must("images", "delete", iid)
	must("bundles", "delete", bid)
	refused("InvalidResourceStateException", "directory", "delete", "d-00000000f1")
	must("directories", "deregister", "d-00000000f1")
	must("directory", "delete", "d-00000000f1")
}

// TestCLIHostsCommands: the fleet's hosts through the CLI, on a fleet of one (a bbolt
// store): the host listed with its capacity and load, drained (a create is then refused,
// saying why) and undrained, a WorkSpace's host, and the join commands' refusals.
func TestCLIHostsCommands(t *testing.T) {
	f := newFixture(t)
	n, err := fleet.Join(context.Background(), fleet.Config{Store: f.store, Self: fleet.Host{ID: "host-0000000001", Name: "rack1-1",
		Capacity: fleet.Resources{VCPUs: 8, MemoryMiB: 16384}, ComputeTypes: map[catalog.ComputeType]catalog.Hardware{catalog.ComputeValue: {VCPUs: 1, MemoryMiB: 2048}}}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := f.cli(args...)
		if code != 0 {
			t.Fatalf("hostd %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	if out := must("hosts"); !hasRow(out, "host-0000000001", "rack1-1", "ready", "0/8", "0/16384", "0") {
		t.Errorf("hosts:\n%s", out)
	}
	must("hosts", "drain", "host-0000000001")
	if out := must("hosts"); !hasRow(out, "host-0000000001", "draining") {
		t.Errorf("hosts after drain:\n%s", out)
	}
	code, out, errs := f.cli("create", "--directory", dirID, "--user", "alice", "--bundle", bundleVal)
	if code == 0 || !strings.Contains(out+errs, "host-0000000001 is draining") {
		t.Errorf("create on a drained fleet: exit %d: %s%s", code, out, errs)
	}
	must("hosts", "undrain", "host-0000000001")
	id := wsIDPattern.FindString(must("create", "--directory", dirID, "--user", "alice", "--bundle", bundleVal))
	if out := must("hosts"); !hasRow(out, "host-0000000001", "ready", "1/8", "2048/16384", "1") {
		t.Errorf("hosts with a WorkSpace:\n%s", out)
	}
	if out := must("hosts", "workspaces"); !hasRow(out, id, "host-0000000001", "rack1-1", "ready") {
		t.Errorf("hosts workspaces:\n%s", out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"hosts", "approve", "ABCD-EFGH-JKLM"}, "ResourceNotFoundException"},
		{[]string{"hosts", "approve", "not-a-code"}, "InvalidParameterValuesException"},
		{[]string{"hosts", "preapprove", "bogus"}, "InvalidParameterValuesException"},
		{[]string{"hosts", "drain", "host-0000000009"}, "ResourceNotFoundException"},
	} {
		if code, out, errs := f.cli(c.args...); code == 0 || !strings.Contains(out+errs, c.want) {
			t.Errorf("hostd %s: exit %d: %s%s, want %s", strings.Join(c.args, " "), code, out, errs, c.want)
		}
	}
	if out := must("hosts", "preapprove", "mac:52:54:00:12:34:56", "--valid", "2h"); !strings.Contains(out, "preapproved until") {
		t.Errorf("preapprove: %s", out)
	}
}

func TestCLIKeysCommands(t *testing.T) {
	f := newFixture(t)
	must := func(args ...string) string {
		t.Helper()
		code, out, errs := f.cli(args...)
		if code != 0 {
			t.Fatalf("hostd %s: exit %d: %s", strings.Join(args, " "), code, errs)
		}
		return out
	}
	out := must("keys", "create", "--alias", "finance", "--description", "finance desktops")
	keyID := regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`).FindString(out)
	if keyID == "" || !strings.Contains(out, "alias/finance") || !strings.Contains(out, "arn:aws:kms:") {
		t.Fatalf("keys create:\n%s", out)
	}
	id := wsIDPattern.FindString(must("create", "--directory", dirID, "--user", "alice", "--bundle", bundleVal, "--encrypt-user", "--key", "alias/finance"))
	if out := must("describe", id); !strings.Contains(out, "root no, user yes") {
		t.Errorf("describe of an encrypted WorkSpace:\n%s", out)
	}
	if out := must("keys"); !hasRow(out, keyID, "alias/finance", "enabled", "1/500") {
		t.Errorf("keys:\n%s", out)
	}
	if out := must("keys", "disable", "alias/finance"); !strings.Contains(out, keyID+": disabled") {
		t.Errorf("keys disable: %s", out)
	}
	if out := must("keys"); !hasRow(out, keyID, "disabled") {
		t.Errorf("keys after disable:\n%s", out)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create", "--directory", dirID, "--user", "bob", "--bundle", bundleVal, "--encrypt-root", "--key", keyID}, "The specified key is not available. Please provide a valid key for encryption."},
		{[]string{"create", "--directory", dirID, "--user", "bob", "--bundle", bundleVal, "--encrypt-root"}, "needs VolumeEncryptionKey"},
		{[]string{"keys", "enable", "alias/nope"}, "ResourceNotFoundException"},
		{[]string{"keys", "create", "--alias", "aws/workspaces"}, "InvalidParameterValuesException"},
	} {
		if code, out, errs := f.cli(c.args...); code == 0 || !strings.Contains(out+errs, c.want) {
			t.Errorf("hostd %s: exit %d: %s%s, want %s", strings.Join(c.args, " "), code, out, errs, c.want)
		}
	}
	// Its WorkSpace, AVAILABLE, does not reboot while the key is disabled.
	if err := f.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		w.SetState(workspace.Available, time.Now())
		return store.PutJSON(tx, store.Workspaces, id, w)
	}); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := f.cli("reboot", id); code == 0 || !strings.Contains(out+errs, "ResourceUnavailableException") || !strings.Contains(out+errs, "is disabled") {
		t.Errorf("reboot with the key disabled: exit %d: %s%s", code, out, errs)
	}
	if out := must("keys", "enable", keyID); !strings.Contains(out, ": enabled") {
		t.Errorf("keys enable: %s", out)
	}
}
