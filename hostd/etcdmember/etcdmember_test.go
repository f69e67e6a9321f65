package etcdmember

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"deskhost/internal/certs"
)

func TestMain(m *testing.M) {
	RunIfChild()
	os.Exit(m.Run())
}

func shortDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "em")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestBootstrapAndJoin is how a fleet grows: the first host bootstraps a one-member
// cluster, the next two join it through the member API; data written through one member
// is read through another; a member that was killed restarts from its data dir and
// catches up.
func TestBootstrapAndJoin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd, env := TestCommand()
	c, err := StartCluster(ctx, shortDir(t), 1, cmd, env)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, name := range []string{"m2", "m3"} {
		if _, err := c.Join(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.WaitServing(ctx); err != nil {
			t.Fatal(err)
		}
	}
	cli, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ml, err := cli.MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range ml.Members {
		names = append(names, m.Name)
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"m1", "m2", "m3"}) {
		t.Fatalf("members %v", names)
	}
	one := func(m *Member) *clientv3.Client {
		cl, err := Client([]string{m.Config.ClientURL}, c.CAFile, c.ClientCert, c.ClientKey)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cl.Close() })
		return cl
	}
	if _, err := one(c.Members[0]).Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if r, err := one(c.Members[2]).Get(ctx, "k"); err != nil || len(r.Kvs) != 1 || string(r.Kvs[0].Value) != "v" {
		t.Fatalf("read through m3: %v %v", r, err)
	}
	// m2 crashes, misses a write, restarts and has it.
	if err := c.Members[1].Kill(); err != nil {
		t.Fatal(err)
	}
	if _, err := one(c.Members[0]).Put(ctx, "k", "v2"); err != nil {
		t.Fatalf("write with 2 of 3 members: %v", err)
	}
	if err := c.Members[1].Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r, err := one(c.Members[1]).Get(clientv3.WithRequireLeader(ctx), "k", clientv3.WithSerializable())
		if err == nil && len(r.Kvs) == 1 && string(r.Kvs[0].Value) == "v2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("restarted m2 has %v %v\n%s", r, err, c.Members[1].LogTail())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A member can be taken out.
	if err := RemoveMember(ctx, cli, "m3"); err != nil {
		t.Fatal(err)
	}
	if ml, err = cli.MemberList(ctx); err != nil || len(ml.Members) != 2 {
		t.Fatalf("after remove: %v %v", ml, err)
	}
}

// TestMutualTLS: members refuse a client with no certificate, or with one another CA
// signed, on the client and the peer port alike.
func TestMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd, env := TestCommand()
	dir := shortDir(t)
	c, err := StartCluster(ctx, dir, 1, cmd, env)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	other := filepath.Join(dir, "other")
	oc, ok := filepath.Join(other, "c.pem"), filepath.Join(other, "k.pem")
	if err := certs.Issue(filepath.Join(other, "ca"), certs.Leaf{CommonName: "intruder", Client: true}, oc, ok, time.Now()); err != nil {
		t.Fatal(err)
	}
	caPEM, _ := os.ReadFile(c.CAFile)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	foreign, err := tls.LoadX509KeyPair(oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	m := c.Members[0]
	for _, u := range []string{m.Config.ClientURL, m.Config.PeerURL} {
		addr := strings.TrimPrefix(u, "https://")
		for name, certsOffered := range map[string][]tls.Certificate{"no certificate": nil, "another CA's certificate": {foreign}} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, Certificates: certsOffered, MinVersion: tls.VersionTLS12})
			if err == nil {
				// TLS 1.3: the server's verdict on the client arrives with the first read.
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, err = conn.Read(make([]byte, 1))
				conn.Close()
			}
			if err == nil || !strings.Contains(err.Error(), "certificate") {
				t.Errorf("%s with %s: %v, want a refusal naming the certificate", u, name, err)
			}
		}
	}
	// Through the etcd client: the same refusal, and a good certificate works.
	bad, err := Client(c.Endpoints(), c.CAFile, oc, ok)
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	bctx, bcancel := context.WithTimeout(ctx, 3*time.Second)
	_, err = bad.Get(bctx, "k")
	bcancel()
	if err == nil {
		t.Fatal("a client with another CA's certificate read from the cluster")
	}
	good, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if _, err := good.Put(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFileRefusesBadConfig(t *testing.T) {
	base := Config{Name: "m1", DataDir: "/tmp/x", ClientURL: "https://127.0.0.1:1", PeerURL: "https://127.0.0.1:2", State: "new",
		CAFile: "ca.pem", CertFile: "c.pem", KeyFile: "k.pem"}
	if _, err := base.File(); err != nil {
		t.Fatal(err)
	}
	for want, mut := range map[string]func(*Config){
		"mutual TLS":      func(c *Config) { c.CertFile = "" },
		"must be https":   func(c *Config) { c.ClientURL = "http://127.0.0.1:1" },
		"new or existing": func(c *Config) { c.State = "joining" },
		"name, data dir":  func(c *Config) { c.Name = "" },
	} {
		c := base
		mut(&c)
		if _, err := c.File(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", want, err)
		}
	}
}

// BenchmarkStartup is the time from starting a member (a fresh one-member cluster) to its
// first served write over mutual TLS, for hostd's embedded etcd (`hostd etcd`, from
// DESKHOST_BIN, else this test binary) and Debian's etcd-server when it is installed: the
// measurement behind choosing the embedded server (hostd/etcdmember/README.md).
func BenchmarkStartup(b *testing.B) {
	cmd, env := TestCommand()
	if bin := os.Getenv("DESKHOST_BIN"); bin != "" {
		if _, err := os.Stat(filepath.Join(bin, "hostd")); err == nil {
			cmd, env = []string{filepath.Join(bin, "hostd"), "etcd"}, nil
		}
	}
	variants := []struct {
		name string
		cmd  []string
		env  []string
	}{{"embed", cmd, env}}
	if _, err := os.Stat("/usr/bin/etcd"); err == nil {
		variants = append(variants, struct {
			name string
			cmd  []string
			env  []string
		}{"debian", []string{"/usr/bin/etcd"}, []string{"ETCD_UNSUPPORTED_ARCH="}})
	}
	for _, v := range variants {
		b.Run(v.name, func(b *testing.B) {
			var total time.Duration
			for i := 0; i < b.N; i++ {
				dir := shortDir(b)
				t0 := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				c, err := StartCluster(ctx, dir, 1, v.cmd, v.env)
				if err != nil {
					cancel()
					b.Fatal(err)
				}
				cli, err := c.Client()
				if err == nil {
					_, err = cli.Put(ctx, "k", "v")
					cli.Close()
				}
				took := time.Since(t0)
				cancel()
				c.Close()
				if err != nil {
					b.Fatal(err)
				}
				total += took
			}
			b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms-to-first-write")
		})
	}
}
