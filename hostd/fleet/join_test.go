package fleet

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/etcdmember"
	"deskhost/hostd/keystore"
	"deskhost/hostd/store"
	"deskhost/internal/catalog"
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// testLocal is a host's fleet settings on loopback, its etcd member this test binary.
func testLocal(t *testing.T, dir, name, hwid, join string, members int) Local {
	cmd, env := etcdmember.TestCommand()
	l := Local{Dir: filepath.Join(dir, name), Name: name, Advertise: "127.0.0.1", Listen: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		Join: join, Members: members, EtcdClientPort: freePort(t), EtcdPeerPort: freePort(t), HardwareID: hwid,
		Capacity: Resources{4, 2048}, ComputeTypes: value, Timeout: 3 * time.Second, Command: cmd, Env: env, Log: testLog(t).With("host", name)}
	t.Cleanup(func() {
		if pid := MemberPID(l.Dir); pid > 0 {
			if p, err := os.FindProcess(pid); err == nil {
				p.Kill()
				p.Wait()
			}
		}
	})
	return l
}

// serveFleet starts a host's fleet port and its place in the fleet, as hostd serve does.
func serveFleet(t *testing.T, l Local, m Membership) *store.Etcd {
	t.Helper()
	return serveFleetWith(t, l, m, nil)
}

// serveFleetWith is serveFleet, the fleet port serving master as the fleet's key store
// master key.
func serveFleetWith(t *testing.T, l Local, m Membership, master *keystore.Master) *store.Etcd {
	t.Helper()
	st, err := l.OpenStore(m)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n, err := Join(context.Background(), Config{Store: st, Self: l.Self(m), LeaseTTL: 5 * time.Second, Log: l.Log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	srv := &Server{Local: l, Membership: m, Store: st, Master: master, Log: l.Log}
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		c, err := tls.Dial("tcp", l.Listen, &tls.Config{InsecureSkipVerify: true})
		if err == nil {
			c.Close()
			break
		}
		if i > 100 {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return st
}

type joined struct {
	m   Membership
	err error
}

// TestJoin runs the whole join on real TLS and a real etcd cluster: the first host makes
// the fleet (CA, first member); a second host shows a code, is approved with it, gets its
// certificate and becomes the second member (a learner, then a voter); a third, whose
// hardware id was preapproved, joins unattended and, with the fleet at its members, as a
// client only. A host that pins another CA refuses to join; a code nobody shows approves
// nothing.
func TestJoin(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	l1 := testLocal(t, dir, "h1", "dmi-uuid:11111111-1111-1111-1111-111111111111", "", 2)
	m1, err := Bootstrap(ctx, l1)
	if err != nil {
		t.Fatal(err)
	}
	if m1.Member == nil || m1.HostID == "" || !strings.HasPrefix(m1.CAFingerprint, "sha256:") {
		t.Fatalf("bootstrap: %+v", m1)
	}
	st1 := serveFleet(t, l1, m1)
	joinURL := "https://" + l1.Listen

	// A host pinning another CA does not join (nor shows a code to approve).
	bad := testLocal(t, dir, "bad", "mac:52:54:00:00:00:09", joinURL, 2)
	bad.CAFingerprint = "sha256:" + strings.Repeat("ab", 32)
	if _, _, err := bad.askToJoin(ctx, []byte("key"), func(string) { t.Error("a code was shown under the wrong CA") }); err == nil || !strings.Contains(err.Error(), "not the pinned") {
		t.Fatalf("joining under a CA other than the pinned one: %v", err)
	}

	// Host 2: its code, approved by an administrator.
	l2 := testLocal(t, dir, "h2", "dmi-uuid:22222222-2222-2222-2222-222222222222", joinURL, 2)
	l2.CAFingerprint = m1.CAFingerprint // pinned, as a PXE command line would; the code is still shown
	codes := make(chan string, 4)
	res := make(chan joined, 1)
	go func() {
		m, err := JoinFleet(ctx, l2, func(c string) { codes <- c })
		res <- joined{m, err}
	}()
	var code string
	select {
	case code = <-codes:
	case r := <-res:
		t.Fatalf("joined without approval: %+v", r)
	case <-time.After(30 * time.Second):
		t.Fatal("no join code shown")
	}
	if b, _ := os.ReadFile(l2.JoinCodeFile()); strings.TrimSpace(string(b)) != code {
		t.Errorf("the console's join code file says %q, the log %q", b, code)
	}
	// It is listed as joining, with its code.
	waitFor(t, 10*time.Second, func() bool {
		for _, v := range describe(t, st1) {
			if v.State == Joining && FormatCode(v.Code) == code && v.HardwareID == l2.HardwareID {
				return true
			}
		}
		return false
	})
	// Not yet: no credentials before approval.
	if _, err := os.Stat(l2.CertFile()); err == nil {
		t.Fatal("a certificate before approval")
	}
	if _, err := Approve(st1, "AAAA-BBBB-CCCC", time.Now()); !catalog.IsError(err, catalog.ResourceNotFound) {
		t.Fatalf("approving a code nobody shows: %v", err)
	}
	t0 := time.Now()
	if _, err := Approve(st1, strings.ToLower(code), time.Now()); err != nil {
		t.Fatal(err)
	}
	var r joined
	select {
	case r = <-res:
	case <-time.After(2 * time.Minute):
		t.Fatal("approved, but the host did not join")
	}
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Logf("host 2 joined %s after approval (credentials, member started, promoted)", time.Since(t0).Round(10*time.Millisecond))
	if r.m.Member == nil || r.m.Member.Learner || r.m.FleetID != m1.FleetID || r.m.CAFingerprint != m1.CAFingerprint {
		t.Fatalf("host 2's membership: %+v", r.m)
	}
	if _, err := os.Stat(l2.JoinCodeFile()); err == nil {
		t.Error("the join code file stayed after the join")
	}
	st2 := serveFleet(t, l2, r.m) // its credentials open the store (mutual TLS)
	ml, err := st2.Client().MemberList(ctx)
	if err != nil || len(ml.Members) != 2 || ml.Members[0].IsLearner || ml.Members[1].IsLearner {
		t.Fatalf("members: %v %+v", err, ml)
	}

	// Host 3, preapproved by hardware id: no code to approve; the fleet has its 2 members,
	// so it is a client.
	l3 := testLocal(t, dir, "h3", "mac:52:54:00:00:00:03", "https://"+l2.Listen, 2)
	if _, err := Preapprove(st1, "bogus", 0, time.Now()); !catalog.IsError(err, catalog.InvalidParameterValues) {
		t.Errorf("preapproving a malformed hardware id: %v", err)
	}
	if _, err := Preapprove(st1, l3.HardwareID, time.Hour, time.Now()); err != nil {
		t.Fatal(err)
	}
	jctx, jcancel := context.WithTimeout(ctx, time.Minute)
	m3, err := JoinFleet(jctx, l3, func(string) {})
	jcancel()
	if err != nil {
		t.Fatalf("a preapproved host: %v", err)
	}
	if m3.Member != nil {
		t.Errorf("host 3 became a member of a fleet that keeps 2: %+v", m3.Member)
	}
	st3 := serveFleet(t, l3, m3)
	views := describe(t, st3)
	if len(views) != 3 || views[m1.HostID].State != Ready || !views[r.m.HostID].EtcdMember || views[m3.HostID].EtcdMember {
		t.Errorf("hosts: %+v", views)
	}
	// The preapproval was used up.
	if err := st1.View(func(tx store.Tx) error {
		_, err := tx.Get(Preapproved, l3.HardwareID)
		return err
	}); err != store.ErrNotFound {
		t.Errorf("the preapproval is still there: %v", err)
	}
}

func waitFor(t *testing.T, within time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s", within)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
