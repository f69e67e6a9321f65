package fleet

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/internal/certs"
)

func readCheck(t *testing.T, st store.Store) []byte {
	t.Helper()
	var b []byte
	if err := st.View(func(tx store.Tx) error { var err error; b, err = tx.Get(Secrets, keyMasterCheck); return err }); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMasterKeyCheck: on a single host's store (bbolt, no peers) the first master key
// becomes the fleet's, its check value written; the same key matches on the next start;
// another host's key does not match, is kept (no peers to fetch from) and does not
// overwrite the check value. With peers but none alive, hostd does not start.
func TestMasterKeyCheck(t *testing.T) {
	dir := t.TempDir()
	st, err := store.OpenBolt(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := testLog(t)
	path1 := filepath.Join(dir, "h1", keystore.MasterFile)
	m1, err := MasterKey{Store: st, Self: "host-1", Path: path1, Log: log}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !m1.Matches(readCheck(t, st)) {
		t.Fatal("the first host's master key is not the one the check value names")
	}
	if fi, err := os.Stat(path1); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("master key file: %v", err)
	}
	again, err := MasterKey{Store: st, Self: "host-1", Path: path1, Log: log}.Resolve(context.Background())
	if err != nil || again.Hex() != m1.Hex() {
		t.Fatalf("the next start: %v, another master key", err)
	}
	// Another master key, no peers: kept, as before there were check values.
	path2 := filepath.Join(dir, "h2", keystore.MasterFile)
	m2, err := MasterKey{Store: st, Self: "host-2", Path: path2, Log: log}.Resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if m2.Matches(readCheck(t, st)) || !m1.Matches(readCheck(t, st)) {
		t.Fatal("a second host's master key overwrote the fleet's check value")
	}
	// With peers but no other host alive: an error that says so, after its attempts.
	t0 := time.Now()
	_, err = MasterKey{Store: st, Self: "host-2", Path: path2, Peers: &Peers{Store: st, Self: "host-2"}, Log: log,
		Attempts: 3, Backoff: 10 * time.Millisecond}.Resolve(context.Background())
	if err == nil || !strings.Contains(err.Error(), "no live host of the fleet gave it after 3 attempts") || !strings.Contains(err.Error(), "no other host") {
		t.Fatalf("no peer alive: %v", err)
	}
	if time.Since(t0) < 30*time.Millisecond {
		t.Error("no backoff between attempts")
	}
	if cur, err := keystore.LoadMaster(path2); err != nil || cur.Hex() != m2.Hex() {
		t.Fatalf("a failed fetch changed the master key file: %v", err)
	}
}

// TestMasterKeyFleet runs on a real fleet (etcd under the fleet CA, fleet ports with
// mutual TLS): concurrent first hosts claim one check value; a host holding another
// master key fetches the fleet's from a peer, checks it and keeps its old one beside it;
// the endpoint refuses a client without a fleet certificate, with a certificate of
// another CA, and with a fleet certificate of a host not in the fleet.
func TestMasterKeyFleet(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	l1 := testLocal(t, dir, "h1", "dmi-uuid:11111111-1111-1111-1111-111111111111", "", 1)
	m1, err := Bootstrap(ctx, l1)
	if err != nil {
		t.Fatal(err)
	}

	// First writer wins, on etcd's optimistic transactions: 6 hosts claim at once on a
	// store of their own (a prefix), exactly one master key is the fleet's.
	race, err := store.OpenEtcd(store.EtcdConfig{Endpoints: m1.Endpoints, CAFile: l1.CAFile(), CertFile: l1.CertFile(), KeyFile: l1.KeyFile(),
		Prefix: "/race/", Timeout: 5 * time.Second, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer race.Close()
	var wg sync.WaitGroup
	masters := make([]*keystore.Master, 6)
	errs := make([]error, 6)
	for i := range masters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			masters[i], errs[i] = MasterKey{Store: race, Self: fmt.Sprintf("host-%d", i), Path: filepath.Join(dir, "race", fmt.Sprint(i), "master.key"),
				Log: slog.New(slog.DiscardHandler)}.Resolve(ctx)
		}()
	}
	wg.Wait()
	winners := 0
	check := readCheck(t, race)
	for i, m := range masters {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if m.Matches(check) {
			winners++
		}
	}
	if winners != 1 {
		t.Fatalf("%d of 6 concurrent first hosts' master keys match the check value, want exactly 1", winners)
	}

	// Host 1 resolves its master key (the fleet's), then serves it.
	st1, err := l1.OpenStore(m1)
	if err != nil {
		t.Fatal(err)
	}
	defer st1.Close()
	path1 := filepath.Join(dir, "h1", "keystore", "master.key")
	fleetMaster, err := MasterKey{Store: st1, Self: m1.HostID, Path: path1, Log: l1.Log}.Resolve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	serveFleetWith(t, l1, m1, fleetMaster)

	// Host 2: credentials from the fleet CA (as an approved join gives), a master key of
	// its own from when it was a fleet of one.
	ca, _, err := GetCA(st1)
	if err != nil {
		t.Fatal(err)
	}
	l2 := testLocal(t, dir, "h2", "dmi-uuid:22222222-2222-2222-2222-222222222222", "", 1)
	m2 := Membership{FleetID: m1.FleetID, HostID: NewHostID(), CAFingerprint: m1.CAFingerprint, Endpoints: m1.Endpoints}
	issue(t, l2, ca, m2.HostID)
	st2 := serveFleetWith(t, l2, m2, nil)
	path2 := filepath.Join(dir, "h2", "keystore", "master.key")
	own, err := keystore.LoadOrCreateMaster(path2)
	if err != nil {
		t.Fatal(err)
	}
	peers2, err := NewPeers(l2, st2, m2.HostID)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1800000000, 0)
	got, err := MasterKey{Store: st2, Self: m2.HostID, Path: path2, Peers: peers2, Log: l2.Log, Now: func() time.Time { return now }}.Resolve(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Hex() != fleetMaster.Hex() {
		t.Fatal("host 2 did not get the fleet's master key")
	}
	b1, _ := os.ReadFile(path1)
	b2, _ := os.ReadFile(path2)
	if !bytes.Equal(b1, b2) {
		t.Fatal("the master key files of hosts 1 and 2 differ")
	}
	if fi, err := os.Stat(path2); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("host 2's master key file: %v", err)
	}
	if kept, err := keystore.LoadMaster(path2 + ".replaced-1800000000"); err != nil || kept.Hex() != own.Hex() {
		t.Fatalf("host 2's own master key is not kept beside the fleet's: %v", err)
	}

	// Refusals.
	_, pool, err := l1.TLS()
	if err != nil {
		t.Fatal(err)
	}
	url := "https://" + l1.Listen + masterPath
	get := func(certs ...tls.Certificate) (int, error) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: certs}}, Timeout: 10 * time.Second}
		resp, err := hc.Get(url)
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}
	if code, err := get(); err != nil || code != http.StatusUnauthorized {
		t.Errorf("without a client certificate: %d %v, want 401", code, err)
	}
	other, err := certs.SelfSigned(filepath.Join(dir, "other"), []string{"localhost"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get(other); err == nil {
		t.Errorf("with a certificate of another CA: HTTP %d, want the handshake refused", code)
	}
	stranger := clientCert(t, ca, "host-notinthefleet")
	if code, err := get(stranger); err != nil || code != http.StatusForbidden {
		t.Errorf("a fleet certificate of a host not in the fleet: %d %v, want 403", code, err)
	}
	// A peer without the fleet's master key yet serves none.
	if _, err := NewPeersMust(t, l1, st1, m1.HostID).Master(ctx, m2.HostID); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("host 2 (serving no master key) answered: %v", err)
	}
}

// NewPeersMust is NewPeers or the test's end.
func NewPeersMust(t *testing.T, l Local, st store.Store, self string) *Peers {
	t.Helper()
	p, err := NewPeers(l, st, self)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// issue gives l a host certificate from ca, as an approved join does.
func issue(t *testing.T, l Local, ca *certs.CA, hostID string) {
	t.Helper()
	if err := os.MkdirAll(l.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	_, pub, err := l.hostKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := HostCert(ca, hostID, []string{l.Advertise}, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := certs.WritePEM(l.CertFile(), der, false); err != nil {
		t.Fatal(err)
	}
	if err := certs.WritePEM(l.CAFile(), ca.Cert.Raw, false); err != nil {
		t.Fatal(err)
	}
}

// clientCert is a certificate the fleet CA signed for cn, with its key.
func clientCert(t *testing.T, ca *certs.CA, cn string) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	der, err := HostCert(ca, cn, nil, pub, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
}
