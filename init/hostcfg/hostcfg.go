// Package hostcfg finds the host config at boot, in order: the kernel command line's
// deskhost.config= (a path, or an http:// or tftp:// URL), else the config baked into
// the image, else /perm/deskhost.yaml. A URL is fetched over a network brought up just for
// that (DHCP on every NIC, the first lease wins) and taken down again, since netcfg owns
// the NICs afterwards.
package hostcfg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"pack.ag/tftp"

	"deskhost/internal/dhcpclient"
	"deskhost/internal/hostconfig"
	"deskhost/internal/imagelayout"
)

// MaxSize bounds a fetched config.
const MaxSize = 64 << 20

// Cmdline parses a kernel command line into key=value parameters (flags without '=' map
// to ""); the last occurrence wins, as in the kernel.
func Cmdline(s string) map[string]string {
	out := map[string]string{}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		out[k] = v
	}
	return out
}

// Source says where the config came from.
type Source struct {
	Kind     string // "cmdline", "baked", "perm"
	Location string // path or URL
}

func (s Source) String() string { return s.Kind + " " + s.Location }

// Finder locates the config. The zero value uses the image's paths.
type Finder struct {
	Baked, Perm string // default imagelayout.BakedConfig, imagelayout.PermConfig
	// Bootstrap brings up a network for a URL and returns a function that takes it down
	// again; nil uses DHCP on every NIC.
	Bootstrap func(ctx context.Context) (func(), error)
	Log       *slog.Logger
}

// Find returns the config's bytes and where they came from.
func (f *Finder) Find(ctx context.Context, params map[string]string) ([]byte, Source, error) {
	baked, perm := f.Baked, f.Perm
	if baked == "" {
		baked = imagelayout.BakedConfig
	}
	if perm == "" {
		perm = imagelayout.PermConfig
	}
	if loc, ok := params[imagelayout.ParamConfig]; ok && loc != "" {
		src := Source{"cmdline", loc}
		if u, err := url.Parse(loc); err == nil && (u.Scheme == "http" || u.Scheme == "tftp") {
			b, err := f.fetchURL(ctx, u)
			if err != nil {
				return nil, src, err
			}
			return b, src, nil
		}
		if !strings.HasPrefix(loc, "/") {
			return nil, src, fmt.Errorf("%s=%s: want an absolute path or an http:// or tftp:// URL", imagelayout.ParamConfig, loc)
		}
		b, err := os.ReadFile(loc)
		return b, src, err
	}
	for _, c := range []Source{{"baked", baked}, {"perm", perm}} {
		b, err := os.ReadFile(c.Location)
		if err == nil {
			return b, c, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, c, err
		}
	}
	return nil, Source{"none", ""}, fmt.Errorf("no host config: the command line has no %s=, the image has no %s, and there is no %s",
		imagelayout.ParamConfig, baked, perm)
}

// Parse validates a config as hostd and init will read it.
func Parse(b []byte) (*hostconfig.Config, error) {
	c, err := hostconfig.Parse(b)
	if err != nil {
		return nil, err
	}
	c.Init.Defaults()
	return c, nil
}

func (f *Finder) fetchURL(ctx context.Context, u *url.URL) ([]byte, error) {
	boot := f.Bootstrap
	if boot == nil {
		boot = func(ctx context.Context) (func(), error) { return DHCPBootstrap(ctx, f.Log) }
	}
	down, err := boot(ctx)
	if err != nil {
		return nil, fmt.Errorf("host config %s: no network to fetch it over: %w", u, err)
	}
	defer down()
	var lastErr error
	// The network may need a moment (ARP, a server starting): retry for a while.
	for attempt := 0; attempt < 10; attempt++ {
		b, err := Fetch(ctx, u.String())
		if err == nil {
			return b, nil
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil, lastErr
}

// Fetch gets an http:// or tftp:// URL.
func Fetch(ctx context.Context, raw string) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http":
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return nil, err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, fmt.Errorf("host config: %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("host config %s: %s", raw, resp.Status)
		}
		return readLimited(resp.Body, raw)
	case "tftp":
		c, err := tftp.NewClient(tftp.ClientTimeout(2), tftp.ClientRetransmit(3), tftp.ClientBlocksize(1428))
		if err != nil {
			return nil, err
		}
		resp, err := c.Get(raw)
		if err != nil {
			return nil, fmt.Errorf("host config %s: %w", raw, err)
		}
		return readLimited(resp, raw)
	default:
		return nil, fmt.Errorf("host config %s: scheme %q: want http or tftp", raw, u.Scheme)
	}
}

func readLimited(r io.Reader, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("host config %s: %w", what, err)
	}
	if len(b) > MaxSize {
		return nil, fmt.Errorf("host config %s: larger than %d bytes", what, MaxSize)
	}
	return b, nil
}

// leaseGrace is how long DHCPBootstrap waits for the other NICs' leases after the first.
const leaseGrace = 3 * time.Second

// DHCPBootstrap brings every Ethernet NIC up, asks DHCP on all of them at once, and
// configures every lease that comes within leaseGrace of the first: each NIC's address
// (so a server on any of the NICs' networks is reached on that NIC) and a default route
// per lease, the first lease's preferred. Taking only the first lease would send a
// config server's traffic out of whichever NIC answered first, which need not be the one
// on the server's network. The returned function removes what it configured.
func DHCPBootstrap(ctx context.Context, log *slog.Logger) (func(), error) {
	if log == nil {
		log = slog.Default()
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, err
	}
	var nics []netlink.Link
	for _, l := range links {
		if l.Type() != "device" || l.Attrs().Flags&net.FlagLoopback != 0 || len(l.Attrs().HardwareAddr) != 6 {
			continue
		}
		if err := netlink.LinkSetUp(l); err != nil {
			log.Warn("bootstrap: link up", "interface", l.Attrs().Name, "err", err)
			continue
		}
		nics = append(nics, l)
	}
	if len(nics) == 0 {
		return nil, errors.New("no Ethernet interface (are the NIC drivers in the image?)")
	}
	sort.Slice(nics, func(i, j int) bool { return nics[i].Attrs().Name < nics[j].Attrs().Name })
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	type result struct {
		link  netlink.Link
		lease *dhcpclient.Lease
		err   error
	}
	results := make(chan result, len(nics))
	for _, l := range nics {
		go func(l netlink.Link) {
			c, err := dhcpclient.New(netns.None(), l.Attrs().Name, log)
			if err != nil {
				results <- result{l, nil, err}
				return
			}
			defer c.Close()
			lease, err := c.Acquire(ctx)
			results <- result{l, lease, err}
		}(l)
	}
	var errs []error
	var undo []func()
	teardown := func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	var grace <-chan time.Time
collect:
	for range nics {
		var r result
		select {
		case r = <-results:
		case <-grace:
			break collect
		}
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		if grace == nil {
			grace = time.After(leaseGrace)
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: r.lease.Addr.Addr().AsSlice(), Mask: net.CIDRMask(r.lease.Addr.Bits(), 32)}}
		if err := netlink.AddrAdd(r.link, addr); err != nil && !errors.Is(err, os.ErrExist) {
			errs = append(errs, fmt.Errorf("%s: address %s: %w", r.link.Attrs().Name, r.lease.Addr, err))
			continue
		}
		link := r.link
		undo = append(undo, func() { _ = netlink.AddrDel(link, addr) })
		if r.lease.Router.IsValid() {
			// Leases in the order they came: the first one's default route is preferred.
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: r.lease.Router.AsSlice(), Priority: 100 + len(undo)}
			if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, os.ErrExist) {
				log.Warn("bootstrap: default route", "interface", link.Attrs().Name, "err", err)
			} else {
				undo = append(undo, func() { _ = netlink.RouteDel(route) })
			}
		}
		log.Info("bootstrap network", "interface", link.Attrs().Name, "address", r.lease.Addr.String(), "router", r.lease.Router.String())
	}
	cancel() // NICs still asking may stop
	if len(undo) > 0 {
		return teardown, nil
	}
	return nil, fmt.Errorf("no DHCP lease on %d interfaces: %w", len(nics), errors.Join(errs...))
}
