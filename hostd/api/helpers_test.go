package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"deskhost/hostd/keystore"
	"deskhost/hostd/service"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/addrpool"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
)

// The test catalog: real ids in the forms hostd issues.
const (
	testRegion   = "local"
	dirID        = "d-0123456789"
	otherDirID   = "d-abcdef0123"
	bundleStd    = "wsb-standard01"
	bundleValue  = "wsb-value00001"
	bundleBig    = "wsb-power000001"
	imageLinux   = "wsi-linux000001"
	accessKeyID  = "AKIDEXAMPLE00000001"
	secretKey    = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	accessKeyID2 = "AKIDEXAMPLE00000002"
	secretKey2   = "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY"
)

func testConfig() service.Config {
	return service.Config{
		ComputeTypes: map[catalog.ComputeType]catalog.Hardware{
			catalog.ComputeValue:    {VCPUs: 1, MemoryMiB: 2048},
			catalog.ComputeStandard: {VCPUs: 2, MemoryMiB: 4096},
			catalog.ComputePower:    {VCPUs: 4, MemoryMiB: 16384},
		},
		WorkspaceQuota: 50,
		HostNetworks:   func() ([]netip.Prefix, error) { return []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, nil },
		Keys:           testMaster(),
	}
}

// testMaster is a key store master key of random bytes.
func testMaster() *keystore.Master {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	m, err := keystore.NewMaster(b)
	if err != nil {
		panic(err)
	}
	return m
}

// seedCatalog puts the test catalog into the store through the service's import, as
// hostd does with a host config's catalog sections.
func seedCatalog(t *testing.T, svc *service.Service) {
	t.Helper()
	var l hostconfig.LegacyCatalog
	add := func(from string, v any) {
		switch x := v.(type) {
		case catalog.Image:
			l.Images = append(l.Images, hostconfig.Sourced[catalog.Image]{From: from, Item: x})
		case catalog.Bundle:
			l.Bundles = append(l.Bundles, hostconfig.Sourced[catalog.Bundle]{From: from, Item: x})
		case catalog.Directory:
			l.Directories = append(l.Directories, hostconfig.Sourced[catalog.Directory]{From: from, Item: x})
		}
	}
	add("images[0]", catalog.Image{ID: imageLinux, Name: "Debian desktop", OS: catalog.Linux, Dir: "/nonexistent"})
	add("bundles[0]", catalog.Bundle{ID: bundleStd, Name: "Standard Linux", Description: "2 vCPU, 4 GiB", ImageID: imageLinux,
		ComputeType: catalog.ComputeStandard, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 50})
	add("bundles[1]", catalog.Bundle{ID: bundleValue, Name: "Value Linux", ImageID: imageLinux,
		ComputeType: catalog.ComputeValue, Protocol: catalog.PCoIP, RootGiB: 80, UserGiB: 10})
	add("bundles[2]", catalog.Bundle{ID: bundleBig, Name: "Power Linux", ImageID: imageLinux,
		ComputeType: catalog.ComputePower, Protocol: catalog.PCoIP, RootGiB: 175, UserGiB: 100})
	add("directories[0]", catalog.Directory{ID: dirID, Name: "corp.example.com", Alias: "corp", RegistrationCode: "SLiad+KX7B2Q", Users: []catalog.User{
		{UserName: "alice", Email: "alice@example.com"},
		{UserName: "bob", Email: "bob@example.com"},
		{UserName: "carol", Email: "carol@example.com"},
		{UserName: "dave", Email: "dave@example.com"},
		{UserName: "erin", Email: "erin@example.com"},
		{UserName: "nomail"},
	}})
	add("directories[1]", catalog.Directory{ID: otherDirID, Name: "lab.example.com", Alias: "lab", RegistrationCode: "SLiad+LAB001", Users: []catalog.User{
		{UserName: "alice", Email: "alice@lab.example.com"},
	}})
	if _, err := svc.ImportCatalog(context.Background(), &l, "test"); err != nil {
		t.Fatal(err)
	}
}

// recWaker records the WorkSpaces the service wakes the controller for.
type recWaker struct {
	mu  sync.Mutex
	ids []string
}

func (w *recWaker) Wake(id string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ids = append(w.ids, id)
}

func (w *recWaker) calls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.ids...)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeClock is an injectable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// env is a real service over a real bbolt store, and the API in front of it.
type env struct {
	t      *testing.T
	store  *store.Bolt
	svc    *service.Service
	waker  *recWaker
	api    *Server
	log    *syncBuffer
	url    string // HTTPS base URL
	cert   string // the self-signed certificate's PEM file
	roots  *x509.CertPool
	region string
}

type envOptions struct {
	throttle  hostconfig.Throttle
	now       func() time.Time
	brokerGID int // with brokerGroup: the local socket's broker group
	broker    bool
	// workspaceQuota overrides testConfig's WorkSpaces quota.
	workspaceQuota int
	// primaryPool, if set, is the primary network's address pool ("first-last").
	primaryPool string
	// serviceNow is the service's clock (nil: time.Now).
	serviceNow func() time.Time
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "hostd.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	logBuf := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	waker := &recWaker{}
	cfg := testConfig()
	if o.workspaceQuota > 0 {
		cfg.WorkspaceQuota = o.workspaceQuota
	}
	if o.primaryPool != "" {
		pool, err := addrpool.Parse(o.primaryPool)
		if err != nil {
			t.Fatal(err)
		}
		cfg.PrimaryPool = func() (addrpool.Range, bool) { return pool, true }
	}
	cfg.ImageDir = filepath.Join(dir, "images")
	svc := service.New(st, cfg, waker, o.serviceNow, logger)
	seedCatalog(t, svc)
	if o.throttle == (hostconfig.Throttle{}) {
		o.throttle = hostconfig.Throttle{Rate: 1000, Burst: 1000} // out of the way unless tested
	}
	srv := New(svc, Options{
		Region: testRegion,
		AccessKeys: []hostconfig.AccessKey{
			{ID: accessKeyID, Secret: secretKey, Name: "admin"},
			{ID: accessKeyID2, Secret: secretKey2, Name: "ops"},
		},
		Throttle:       o.throttle,
		Now:            o.now,
		Logger:         logger,
		BrokerGID:      o.brokerGID,
		BrokerGroupSet: o.broker,
	})
	e := &env{t: t, store: st, svc: svc, waker: waker, api: srv, log: logBuf, region: testRegion}
	e.startHTTPS(dir)
	return e
}

func (e *env) startHTTPS(dir string) {
	t := e.t
	cert, certPath, err := LoadOrCreateCertificate("", "", filepath.Join(dir, "tls"), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.api.ServeTLSListener(ctx, ln, TLSConfig(cert)) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTLSListener: %v", err)
		}
	})
	pem, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(pem)
	e.cert = certPath
	e.url = "https://" + ln.Addr().String()
}

func (e *env) httpClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.roots},
	}}
}

// client is hostd's API client for the test server, without retries so that each call is
// one request.
func (e *env) client(keyID, secret string) *hostdclient.Client {
	c, err := hostdclient.New(hostdclient.Options{Endpoint: e.url, RootCAs: e.roots, AccessKeyID: keyID, SecretAccessKey: secret,
		Region: e.region, MaxAttempts: 1})
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// rawCall is one hand-made request, signed like an SDK would unless unsigned.
type rawCall struct {
	method, path, target, contentType string
	body                              []byte
	unsigned                          bool
	keyID, secret                     string
	chunked                           bool // send without Content-Length
}

type rawResult struct {
	status  int
	header  http.Header
	body    []byte
	errType string
	message string
}

func (e *env) raw(c rawCall) rawResult {
	t := e.t
	t.Helper()
	if c.method == "" {
		c.method = http.MethodPost
	}
	if c.path == "" {
		c.path = "/"
	}
	if c.contentType == "" {
		c.contentType = ContentType
	}
	if c.keyID == "" {
		c.keyID, c.secret = accessKeyID, secretKey
	}
	var body io.Reader = bytes.NewReader(c.body)
	if c.chunked {
		body = io.MultiReader(bytes.NewReader(c.body)) // hides the length from net/http
	}
	req, err := http.NewRequest(c.method, e.url+c.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if c.target != "-" {
		req.Header.Set("X-Amz-Target", c.target)
	}
	req.Header.Set("Content-Type", c.contentType)
	if !c.unsigned {
		signRequest(t, req, c.body, c.keyID, c.secret, e.region, time.Now())
	}
	resp, err := e.httpClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := rawResult{status: resp.StatusCode, header: resp.Header, body: rb}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if err := json.Unmarshal(rb, &eb); err != nil {
			t.Fatalf("error body %q is not AWS JSON: %v", rb, err)
		}
		r.errType, r.message = eb.Type, eb.Message
		if h := resp.Header.Get("X-Amzn-ErrorType"); h != eb.Type {
			t.Errorf("X-Amzn-ErrorType %q, body __type %q", h, eb.Type)
		}
	}
	if resp.Header.Get("x-amzn-RequestId") == "" {
		t.Errorf("response has no x-amzn-RequestId")
	}
	if ct := resp.Header.Get("Content-Type"); ct != ContentType {
		t.Errorf("response Content-Type %q", ct)
	}
	return r
}

func signRequest(t *testing.T, req *http.Request, body []byte, keyID, secret, region string, at time.Time) {
	t.Helper()
	sum := sha256.Sum256(body)
	err := v4.NewSigner().SignHTTP(context.Background(),
		aws.Credentials{AccessKeyID: keyID, SecretAccessKey: secret}, req, hex.EncodeToString(sum[:]),
		"workspaces", region, at)
	if err != nil {
		t.Fatal(err)
	}
}

// snapshot is every WorkSpace record as the service describes it, for before/after checks.
func (e *env) snapshot() []workspace.Workspace {
	e.t.Helper()
	var all []workspace.Workspace
	token := ""
	for {
		ws, next, err := e.svc.DescribeWorkspaces(context.Background(), service.DescribeFilter{NextToken: token})
		if err != nil {
			e.t.Fatal(err)
		}
		all = append(all, ws...)
		if next == "" {
			return all
		}
		token = next
	}
}

// setState plays the controller: it moves a WorkSpace to a settled state in the store.
func (e *env) setState(id string, s workspace.State) {
	e.t.Helper()
	err := e.store.Update(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, id)
		if err != nil {
			return err
		}
		w.SetState(s, time.Now())
		return store.PutJSON(tx, store.Workspaces, id, w)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// requireRoot skips a test that needs root outside CI and fails it in CI.
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

func sha256hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

func signer() *v4.Signer { return v4.NewSigner() }
