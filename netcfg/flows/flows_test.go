package flows

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"deskhost/netcfg/internal/testnet"
)

const mark = 0x4e43

// setup: server namespace marks accepted flows to tcp 4172 like netcfg's
// client_acl does; the client connects from two addresses.
func setup(t *testing.T) (srv, cli *testnet.NS) {
	testnet.RequireRoot(t)
	srv, cli = testnet.New(t, "fsrv"), testnet.New(t, "fcli")
	testnet.Veth(t, srv, "s0", cli, "c0")
	srv.IP("addr add 10.9.0.1/24 dev s0")
	srv.IP("link set s0 up")
	cli.IP("addr add 10.9.0.2/24 dev c0")
	cli.IP("addr add 10.9.0.3/24 dev c0")
	cli.IP("link set c0 up")
	rules := "table inet t {\n\tchain in {\n\t\ttype filter hook input priority 0; policy accept;\n\t\ttcp dport 4172 ct state new ct mark set 0x4e43\n\t}\n}\n"
	if out, err := srv.Exec([]byte(rules), "nft", "-f", "-"); err != nil {
		t.Fatal(err, out)
	}
	srv.EchoTCP("0.0.0.0:4172")
	srv.EchoTCP("0.0.0.0:22")
	return srv, cli
}

func TestDropAndTracker(t *testing.T) {
	srv, cli := setup(t)
	ports := []Port{{6, 4172}}
	notFrom2 := func(client, host netip.Addr) bool { return client != netip.MustParseAddr("10.9.0.2") }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr, err := StartTracker(ctx, srv.Handle, mark, ports, nil)
	if err != nil {
		t.Fatal(err)
	}
	var conns []interface{ Close() error }
	for _, src := range []string{"10.9.0.2", "10.9.0.3"} {
		c, err := cli.DialTCP(src, "10.9.0.1:4172", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	ssh, err := cli.DialTCP("10.9.0.2", "10.9.0.1:22", time.Second) // unmarked: never touched
	if err != nil {
		t.Fatal(err)
	}
	defer ssh.Close()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for tr.Len() < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if tr.Len() != 2 {
		t.Fatalf("tracker indexed %d flows, want 2", tr.Len())
	}
	res, err := tr.Drop(notFrom2)
	if err != nil || len(res.Dropped) != 1 || res.Dropped[0].Src.Addr().String() != "10.9.0.2" {
		t.Fatalf("tracker drop: %+v %v", res, err)
	}
	// the fallback (table dump) keeps the allowed flow (a packet of the
	// dropped connection may have re-created an entry: that one may go) and
	// never looks at the unmarked ssh flow
	res, err = DropDisallowed(srv.Handle, mark, ports, notFrom2)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range res.Dropped {
		if f.Src.Addr().String() != "10.9.0.2" {
			t.Fatalf("dump drop after tracker dropped %v", f)
		}
	}
	res, err = DropDisallowed(srv.Handle, mark, ports, func(netip.Addr, netip.Addr) bool { return false })
	if err != nil || len(res.Dropped) != 1 || res.Dropped[0].Src.Addr().String() != "10.9.0.3" {
		t.Fatalf("dump drop: %+v %v", res, err)
	}
	if err := testnet.RoundTrip(ssh, time.Second); err != nil {
		t.Fatalf("unmarked flow hurt: %v", err)
	}
}
