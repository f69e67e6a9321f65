// Package hostcfg finds the host config at boot, in order: the kernel command line's
// deskhost.config= (a path, or an https://, http:// or tftp:// URL), else the config baked
// into the image, else /perm/deskhost.yaml, else none (init then uses its defaults). A URL
// is fetched over a network brought up just for that (DHCP on every NIC) and taken down
// again, since hostd and netcfg own the NICs afterwards.
//
// A fetched config is verified before anything reads it, by what the command line (not
// secret, but trusted: it comes with the kernel) says: an https:// server must chain to
// the CA whose sha256 fingerprint is deskhost.config.ca=, and/or the file must have the
// sha256 deskhost.config.sha256=. A config that cannot be verified is refused, and the
// error says why and what to add.
package hostcfg

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
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
	Kind     string // "cmdline", "baked", "perm", "none"
	Location string // path or URL
	Verified string // how a fetched config was verified
}

func (s Source) String() string {
	out := s.Kind + " " + s.Location
	if s.Verified != "" {
		out += " (verified: " + s.Verified + ")"
	}
	return out
}

// ErrNone is Find's error when there is no config anywhere: init then runs with its
// defaults.
var ErrNone = errors.New("no host config")

// Verify is how a fetched config is checked: either or both.
type Verify struct {
	CA     []byte // sha256 of the CA certificate an https:// server must chain to
	SHA256 []byte // sha256 of the file
}

func (v Verify) String() string {
	var s []string
	if v.CA != nil {
		s = append(s, "TLS to the CA "+short(v.CA)+" pinned on the command line")
	}
	if v.SHA256 != nil {
		s = append(s, "sha256 "+short(v.SHA256)+" as on the command line")
	}
	return strings.Join(s, ", ")
}

func short(b []byte) string { return hex.EncodeToString(b)[:16] + "..." }

// VerifyFromParams reads deskhost.config.ca= and deskhost.config.sha256=.
func VerifyFromParams(params map[string]string) (Verify, error) {
	var v Verify
	var errs []error
	if s, ok := params[imagelayout.ParamConfigCA]; ok {
		b, err := parseSHA256(strings.TrimPrefix(strings.ToLower(s), "sha256:"))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w", imagelayout.ParamConfigCA, s, err))
		}
		v.CA = b
	}
	if s, ok := params[imagelayout.ParamConfigSHA256]; ok {
		b, err := parseSHA256(strings.ToLower(s))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s=%s: %w", imagelayout.ParamConfigSHA256, s, err))
		}
		v.SHA256 = b
	}
	return v, errors.Join(errs...)
}

func parseSHA256(s string) ([]byte, error) {
	b, err := hex.DecodeString(strings.ReplaceAll(s, ":", ""))
	if err != nil || len(b) != sha256.Size {
		return nil, errors.New("want a sha256 in hex (64 digits, colons allowed)")
	}
	return b, nil
}

// check refuses a URL its verification cannot cover; the error says what to add.
func (v Verify) check(u *url.URL) error {
	how := fmt.Sprintf("add %s=<sha256 of the file> to the kernel command line", imagelayout.ParamConfigSHA256)
	switch u.Scheme {
	case "https":
		if v.CA == nil && v.SHA256 == nil {
			return fmt.Errorf("refused: nothing verifies it: add %s=<sha256 fingerprint of the CA certificate> or %s=<sha256 of the file> to the kernel command line",
				imagelayout.ParamConfigCA, imagelayout.ParamConfigSHA256)
		}
	case "http", "tftp":
		if v.CA != nil && v.SHA256 == nil {
			return fmt.Errorf("refused: %s= verifies https:// only; %s, or fetch it over https://", imagelayout.ParamConfigCA, how)
		}
		if v.SHA256 == nil {
			return fmt.Errorf("refused: %s:// cannot be verified: %s, or fetch it over https:// with %s=<sha256 fingerprint of the CA certificate>",
				u.Scheme, how, imagelayout.ParamConfigCA)
		}
	}
	return nil
}

// content checks the fetched bytes against the pinned sha256.
func (v Verify) content(b []byte) error {
	if v.SHA256 == nil {
		return nil
	}
	sum := sha256.Sum256(b)
	if !bytes.Equal(sum[:], v.SHA256) {
		return fmt.Errorf("refused: its sha256 is %x, the command line's %s= says %x", sum, imagelayout.ParamConfigSHA256, v.SHA256)
	}
	return nil
}

// Finder locates the config. The zero value uses the image's paths.
type Finder struct {
	Baked, Perm string // default imagelayout.BakedConfig, imagelayout.PermConfig
	// Bootstrap brings up a network for a URL and returns a function that takes it down
	// again; nil uses DHCP on every NIC.
	Bootstrap func(ctx context.Context) (func(), error)
	Log       *slog.Logger
	// Leased lists, after a fetch over the default bootstrap, the NICs that got a DHCP
	// lease (init's NIC roles reuse it rather than ask again).
	Leased []string
}

// Find returns the config's bytes and where they came from; ErrNone when there is none.
func (f *Finder) Find(ctx context.Context, params map[string]string) ([]byte, Source, error) {
	baked, perm := f.Baked, f.Perm
	if baked == "" {
		baked = imagelayout.BakedConfig
	}
	if perm == "" {
		perm = imagelayout.PermConfig
	}
	if loc, ok := params[imagelayout.ParamConfig]; ok && loc != "" {
		src := Source{Kind: "cmdline", Location: loc}
		if u, err := url.Parse(loc); err == nil && (u.Scheme == "https" || u.Scheme == "http" || u.Scheme == "tftp") {
			v, err := VerifyFromParams(params)
			if err != nil {
				return nil, src, fmt.Errorf("host config %s: refused: %w", loc, err)
			}
			if err := v.check(u); err != nil {
				return nil, src, fmt.Errorf("host config %s: %w", loc, err)
			}
			b, err := f.fetchURL(ctx, u, v)
			if err != nil {
				return nil, src, err
			}
			if err := v.content(b); err != nil {
				return nil, src, fmt.Errorf("host config %s: %w", loc, err)
			}
			src.Verified = v.String()
			return b, src, nil
		}
		if !strings.HasPrefix(loc, "/") {
			return nil, src, fmt.Errorf("%s=%s: want an absolute path or an https://, http:// or tftp:// URL", imagelayout.ParamConfig, loc)
		}
		b, err := os.ReadFile(loc)
		return b, src, err
	}
	for _, c := range []Source{{Kind: "baked", Location: baked}, {Kind: "perm", Location: perm}} {
		b, err := os.ReadFile(c.Location)
		if err == nil {
			return b, c, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, c, err
		}
	}
	return nil, Source{Kind: "none"}, fmt.Errorf("%w: the command line has no %s=, the image has no %s, and there is no %s",
		ErrNone, imagelayout.ParamConfig, baked, perm)
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

func (f *Finder) fetchURL(ctx context.Context, u *url.URL, v Verify) ([]byte, error) {
	boot := f.Bootstrap
	if boot == nil {
		boot = func(ctx context.Context) (func(), error) {
			down, leased, err := DHCPBootstrap(ctx, f.Log)
			f.Leased = leased
			return down, err
		}
	}
	down, err := boot(ctx)
	if err != nil {
		return nil, fmt.Errorf("host config %s: no network to fetch it over: %w", u, err)
	}
	defer down()
	var lastErr error
	// The network may need a moment (ARP, a server starting): retry for a while. A
	// verification failure is final.
	for attempt := 0; attempt < 10; attempt++ {
		b, err := Fetch(ctx, u.String(), v)
		if err == nil {
			return b, nil
		}
		lastErr = err
		var ve *verifyError
		if errors.As(err, &ve) {
			break
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Second):
		}
	}
	return nil, lastErr
}

// verifyError is a TLS server that is not who the command line says.
type verifyError struct{ err error }

func (e *verifyError) Error() string { return "refused: " + e.err.Error() }
func (e *verifyError) Unwrap() error { return e.err }

// pinnedTLS is a TLS client config that trusts only the CA with fingerprint ca, which the
// server must send in its chain, and checks the server's name as usual.
func pinnedTLS(ca []byte, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         serverName,
		InsecureSkipVerify: true, // verified below, against the pinned CA only
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return &verifyError{errors.New("the server sent no certificate")}
			}
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			found := false
			for _, c := range cs.PeerCertificates {
				if sum := sha256.Sum256(c.Raw); bytes.Equal(sum[:], ca) {
					roots.AddCert(c)
					found = true
				} else {
					inter.AddCert(c)
				}
			}
			if !found {
				return &verifyError{fmt.Errorf("the server's chain has no certificate with the sha256 fingerprint %x of %s= (serve the full chain, CA included)", ca, imagelayout.ParamConfigCA)}
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, DNSName: serverName})
			if err != nil {
				return &verifyError{fmt.Errorf("the server's certificate does not verify against the CA pinned on the command line: %w", err)}
			}
			return nil
		},
	}
}

// Fetch gets an https://, http:// or tftp:// URL. An https:// URL is verified against
// v.CA if set; with only v.SHA256 the content is what proves it (the caller checks).
func Fetch(ctx context.Context, raw string, v Verify) ([]byte, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "http", "https":
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, raw, nil)
		if err != nil {
			return nil, err
		}
		tr := &http.Transport{Proxy: nil, TLSHandshakeTimeout: 10 * time.Second}
		if u.Scheme == "https" {
			if v.CA != nil {
				tr.TLSClientConfig = pinnedTLS(v.CA, u.Hostname())
			} else {
				// No CA pinned: the file's sha256 is what verifies it.
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true}
			}
		}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("redirects are not followed")
		}}).Do(req)
		if err != nil {
			var ve *verifyError
			if errors.As(err, &ve) {
				return nil, fmt.Errorf("host config %s: %w", raw, ve)
			}
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
		return nil, fmt.Errorf("host config %s: scheme %q: want https, http or tftp", raw, u.Scheme)
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
func DHCPBootstrap(ctx context.Context, log *slog.Logger) (func(), []string, error) {
	if log == nil {
		log = slog.Default()
	}
	links, err := netlink.LinkList()
	if err != nil {
		return nil, nil, err
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
		return nil, nil, errors.New("no Ethernet interface (are the NIC drivers in the image?)")
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
	var leased []string
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
		leased = append(leased, link.Attrs().Name)
		log.Info("bootstrap network", "interface", link.Attrs().Name, "address", r.lease.Addr.String(), "router", r.lease.Router.String())
	}
	cancel() // NICs still asking may stop
	if len(undo) > 0 {
		return teardown, leased, nil
	}
	return nil, nil, fmt.Errorf("no DHCP lease on %d interfaces: %w", len(nics), errors.Join(errs...))
}
