package hostconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/testenv"
)

const good = `hostd:
  store: /perm/hostd/store.db
  dataDir: /perm/hostd
  libvirt: {socket: /run/libvirt/libvirt-sock}
  network: {managementBridge: br-mgmt, primaryBridge: br-primary}
  api:
    socket: /run/deskhost/hostd.sock
    listen: 10.0.0.1:8443
    accessKeys: [{id: AKIAEXAMPLE0000001, secret: abcdefghijklmnopqrstuvwxyz, name: admin}]
  computeTypes:
    VALUE: {vcpus: 1, memoryMiB: 256}
  images:
    - {id: wsi-desktop001, name: desktop, os: linux, dir: /perm/images/desktop}
  bundles:
    - {id: wsb-value00001, name: Value, image: wsi-desktop001, computeType: VALUE, protocol: PCOIP, rootGiB: 80, userGiB: 10}
  directories:
    - id: d-0123456789
      name: corp.example.com
      users: [{userName: alice, email: alice@example.com}]
`

func TestParseGoodAppliesDefaults(t *testing.T) {
	c, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	h := c.Hostd
	if h.ProvisionTimeout.Duration != 20*time.Minute || h.API.Throttle.Rate != 2 || h.API.Throttle.Burst != 5 ||
		h.Libvirt.DomainType != "kvm" || h.Libvirt.Pool != "deskhost" || h.API.Region != "local" || h.HealthMisses != 3 {
		t.Errorf("defaults: %+v", h)
	}
	// Guests are confined unless the config says otherwise: unprivileged qemu, cgroup
	// limits, RAM on huge pages.
	if h.Guests.User != "libvirt-qemu" || h.Guests.CgroupLimits == nil || !*h.Guests.CgroupLimits ||
		h.Memory.HugePages == nil || !*h.Memory.HugePages {
		t.Errorf("guest defaults: %+v, hugePages %v", h.Guests, h.Memory.HugePages)
	}
	off, err := Parse([]byte(strings.Replace(good, "  computeTypes:", "  memory: {hugePages: false}\n  guests: {cgroupLimits: false, displayGroup: deskhost-vnc}\n  computeTypes:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if g := off.Hostd.Guests; *g.CgroupLimits || *off.Hostd.Memory.HugePages || g.DisplayGroup != "deskhost-vnc" {
		t.Errorf("explicit guest settings: %+v", g)
	}
	if h.SiteTimeZone != "" || h.HealthGrace.Duration != 5*time.Minute || h.HealthTimeout.Duration != 10*time.Second {
		t.Errorf("health and site defaults: zone %q, grace %s, timeout %s", h.SiteTimeZone, h.HealthGrace.Duration, h.HealthTimeout.Duration)
	}
	berlin, err := Parse([]byte(strings.Replace(good, "  computeTypes:", "  siteTimeZone: Europe/Berlin\n  computeTypes:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if loc, err := berlin.Hostd.SiteZone(); err != nil || loc.String() != "Europe/Berlin" {
		t.Errorf("site zone %v %v", loc, err)
	}
	if img, ok := h.Image("wsi-desktop001"); !ok || img.Dir != "/perm/images/desktop" {
		t.Error("image lookup")
	}
}

func TestParseRejectsWithTheFieldNamed(t *testing.T) {
	for _, tc := range []struct{ from, to, want string }{
		{"  dataDir: /perm/hostd\n", "  dataDir: /perm/hostd\n  dataDri: /x\n", "dataDri"},
		{"store: /perm/hostd/store.db", "store: ''", "hostd.store"},
		{"{socket: /run/libvirt/libvirt-sock}", "{socket: /run/libvirt/libvirt-sock, domainType: xen}", "domainType"},
		{"listen: 10.0.0.1:8443", "listen: 10.0.0.1", "hostd.api.listen"},
		{"secret: abcdefghijklmnopqrstuvwxyz", "secret: short", "accessKeys[0].secret"},
		{"VALUE: {vcpus: 1, memoryMiB: 256}", "HUGE: {vcpus: 1, memoryMiB: 256}", "computeTypes.HUGE"},
		{"userGiB: 10}", "userGiB: 20}", "bundles[0]"},
		{"image: wsi-desktop001, computeType", "image: wsi-nothere0001, computeType", "no such image"},
		{"protocol: PCOIP", "protocol: WSP", "Linux"},
		{"id: d-0123456789", "id: d-corp", "directories[0].id"},
		{"os: linux", "os: beos", "images[0].os"},
		{"  computeTypes:", "  provisionTimeout: soon\n  computeTypes:", "duration"},
		{"  computeTypes:", "  guests: {user: root}\n  computeTypes:", "hostd.guests.user"},
		{"socket: /run/deskhost/hostd.sock", "socket: /perm/hostd/hostd.sock", "not directly in hostd.dataDir"},
		{"  computeTypes:", "  guests: {usr: x}\n  computeTypes:", "usr"},
		{"  computeTypes:", "  siteTimeZone: Mars/Olympus\n  computeTypes:", "hostd.siteTimeZone"},
		{"  computeTypes:", "  healthGrace: -1m\n  computeTypes:", "negative"},
	} {
		bad := strings.Replace(good, tc.from, tc.to, 1)
		if bad == good {
			t.Fatalf("test case %q does not apply", tc.from)
		}
		_, err := Parse([]byte(bad))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s → %s: %v, want an error naming %q", tc.from, tc.to, err, tc.want)
		}
	}
	if _, err := Parse([]byte("")); err == nil {
		t.Error("empty config accepted")
	}
	if _, err := Parse([]byte(good + "---\nhostd: {}\n")); err == nil {
		t.Error("two documents accepted")
	}
}

// The example configs in the repository stay valid.
func TestRepositoryConfigsParse(t *testing.T) {
	root := testenv.RepoRoot()
	b, err := os.ReadFile(filepath.Join(root, "configs", "demo.yaml.in"))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.NewReplacer("@STATE@", "/tmp/s", "@RUNDIR@", "/run/deskhost", "@IMAGE@", "/tmp/i",
		"@ACCESS_KEY@", "AKDH0123456789ABCDEF", "@SECRET_KEY@", "0123456789abcdefghijklmnop").Replace(string(b))
	if _, err := Parse([]byte(s)); err != nil {
		t.Errorf("configs/demo.yaml.in: %v", err)
	}
}
