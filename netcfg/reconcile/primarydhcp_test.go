package reconcile

import (
	"context"
	"testing"
	"time"

	"deskhost/internal/dhcpclient"
)

// TestPrimaryDHCP: with primaryNetwork.dhcp, a guest's primary NIC (eth1, through its
// tap, br-primary and the anti-spoofing rules) leases its primaryAddress from netcfg, with
// the subnet's mask and the router, from the host's own address; once its primaryAddress
// is gone from the desired state, the same request gets no answer.
func TestPrimaryDHCP(t *testing.T) {
	tp := newTopo(t)
	p := tp.params()
	p.PrimaryAddr = hostPrimIP + "/16"
	p.PrimaryDHCP = "{subnet: 10.0.0.0/16, pool: 10.0.2.10-10.0.2.20, router: 10.0.0.1}"
	tp.start(tp.config(p))
	acquire := func() (*dhcpclient.Lease, error) {
		c, err := dhcpclient.New(tp.vm2.Handle, "eth1", quietLog())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return c.Acquire(ctx)
	}
	l, err := acquire()
	if err != nil {
		t.Fatalf("the guest's primary NIC got no lease: %v", err)
	}
	if l.Addr.String() != tp.vm2.primaryIP+"/16" || l.Router.String() != "10.0.0.1" || l.Server.String() != hostPrimIP || len(l.Routes) != 0 {
		t.Fatalf("lease %+v; want %s/16 via 10.0.0.1 from %s, no classless routes", l, tp.vm2.primaryIP, hostPrimIP)
	}
	p.VM2Addr = ""
	if _, err := tp.r.Apply(context.Background(), tp.config(p)); err != nil {
		t.Fatal(err)
	}
	if l, err := acquire(); err == nil {
		t.Fatalf("a primary NIC without a primaryAddress got a lease: %+v", l)
	}
}
