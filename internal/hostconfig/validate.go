package hostconfig

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"time"

	"deskhost/internal/catalog"
)

// Defaults: the guide's numbers where it has one.
const (
	DefaultProvisionTimeout    = 20 * time.Minute // "up to 20 minutes"
	DefaultShutdownTimeout     = 30 * time.Second
	DefaultHealthInterval      = 30 * time.Second
	DefaultHealthMisses        = 3
	DefaultHealthTimeout       = 10 * time.Second
	DefaultHealthGrace         = 5 * time.Minute // "wait a few minutes"
	DefaultTerminatedRetention = time.Hour
	DefaultSnapshotInterval    = 12 * time.Hour // guide catalog §7.1: "every 12 hours"
	DefaultRegion              = "local"
	DefaultPool                = "deskhost"
	DefaultThrottleRate        = 2 // "two API calls per second"
	DefaultThrottleBurst       = 5 // "burst rate of five API calls per second"
	DefaultWorkspaceQuota      = 100
	DefaultGuestUser           = "libvirt-qemu" // Debian's libvirt qemu user
)

func (h *Hostd) defaults() {
	set := func(d *Duration, v time.Duration) {
		if d.Duration == 0 {
			d.Duration = v
		}
	}
	set(&h.ProvisionTimeout, DefaultProvisionTimeout)
	set(&h.ShutdownTimeout, DefaultShutdownTimeout)
	set(&h.HealthInterval, DefaultHealthInterval)
	set(&h.HealthTimeout, DefaultHealthTimeout)
	set(&h.HealthGrace, DefaultHealthGrace)
	set(&h.TerminatedRetention, DefaultTerminatedRetention)
	set(&h.SnapshotInterval, DefaultSnapshotInterval)
	if h.HealthMisses == 0 {
		h.HealthMisses = DefaultHealthMisses
	}
	if h.Libvirt.Pool == "" {
		h.Libvirt.Pool = DefaultPool
	}
	if h.Libvirt.DomainType == "" {
		h.Libvirt.DomainType = "kvm"
	}
	if h.API.Region == "" {
		h.API.Region = DefaultRegion
	}
	if h.API.Throttle.Rate == 0 {
		h.API.Throttle.Rate = DefaultThrottleRate
	}
	if h.API.Throttle.Burst == 0 {
		h.API.Throttle.Burst = DefaultThrottleBurst
	}
	if h.Quotas.Workspaces == 0 {
		h.Quotas.Workspaces = DefaultWorkspaceQuota
	}
	yes := true
	if h.Memory.HugePages == nil {
		h.Memory.HugePages = &yes
	}
	if h.Guests.User == "" {
		h.Guests.User = DefaultGuestUser
	}
	if h.Guests.CgroupLimits == nil {
		h.Guests.CgroupLimits = &yes
	}
	if h.Fleet != nil {
		h.Fleet.defaults(h.DataDir)
	}
}

func (h *Hostd) validate(managedNetwork bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if h.Fleet != nil {
		if h.Store.Etcd != nil {
			bad("hostd: fleet and store.etcd exclude each other: a fleet host's store is the fleet's etcd, reached with the credentials it got when it joined")
		}
		errs = append(errs, h.Fleet.validate()...)
	} else {
		errs = append(errs, h.Store.validate()...)
	}
	if h.DataDir == "" {
		bad("hostd.dataDir: required")
	}
	if h.SnapshotInterval.Duration < 10*time.Second {
		bad("hostd.snapshotInterval %s: at least 10s (the guide's is 12h)", h.SnapshotInterval.Duration)
	}
	if h.Libvirt.Socket == "" {
		bad("hostd.libvirt.socket: required")
	}
	if h.Libvirt.DomainType != "kvm" && h.Libvirt.DomainType != "qemu" {
		bad("hostd.libvirt.domainType %q: must be kvm or qemu", h.Libvirt.DomainType)
	}
	if !managedNetwork && (h.Network.ManagementBridge == "" || h.Network.PrimaryBridge == "") {
		bad("hostd.network: managementBridge and primaryBridge are required unless init.network describes the host's network")
	}
	if h.API.Listen == "" && h.API.Socket == "" {
		bad("hostd.api: set listen (HTTPS) or socket (local), or both")
	}
	if h.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(h.Metrics.Listen); err != nil {
			bad("hostd.metrics.listen %q: %v", h.Metrics.Listen, err)
		}
	}
	if h.API.Listen != "" {
		if _, _, err := net.SplitHostPort(h.API.Listen); err != nil {
			bad("hostd.api.listen %q: %v", h.API.Listen, err)
		}
		if len(h.API.AccessKeys) == 0 {
			bad("hostd.api.accessKeys: HTTPS needs at least one access key")
		}
	}
	if (h.API.TLSCert == "") != (h.API.TLSKey == "") {
		bad("hostd.api: tlsCert and tlsKey go together")
	}
	keys := map[string]bool{}
	for i, k := range h.API.AccessKeys {
		switch {
		case len(k.ID) < 16:
			bad("hostd.api.accessKeys[%d].id: at least 16 characters", i)
		case k.Secret != "" && k.SecretFile != "":
			bad("hostd.api.accessKeys[%d]: secret or secretFile, not both", i)
		case k.Secret == "" && k.SecretFile == "":
			bad("hostd.api.accessKeys[%d]: secretFile (a 0600 file on /perm) or secret required", i)
		case k.SecretFile != "" && !filepath.IsAbs(k.SecretFile):
			bad("hostd.api.accessKeys[%d].secretFile %q: an absolute path", i, k.SecretFile)
		case k.SecretFile == "" && len(k.Secret) < minSecretLen:
			bad("hostd.api.accessKeys[%d].secret: at least %d characters", i, minSecretLen)
		case keys[k.ID]:
			bad("hostd.api.accessKeys[%d].id %s: duplicate", i, k.ID)
		}
		keys[k.ID] = true
	}
	if h.API.Throttle.Rate <= 0 || h.API.Throttle.Burst < 1 {
		bad("hostd.api.throttle: rate must be > 0 and burst ≥ 1")
	}
	if h.HealthMisses < 1 {
		bad("hostd.healthMisses: must be ≥ 1")
	}
	if _, err := h.SiteZone(); err != nil {
		bad("hostd.siteTimeZone %q: %v", h.SiteTimeZone, err)
	}
	if h.Quotas.Workspaces < 1 {
		bad("hostd.quotas.workspaces: must be ≥ 1")
	}
	if h.Quotas.Graphics < 0 || h.Quotas.GraphicsPro < 0 {
		bad("hostd.quotas.graphics, graphicsPro: must be ≥ 0")
	}
	if h.API.Socket != "" && h.DataDir != "" && filepath.Clean(filepath.Dir(h.API.Socket)) == filepath.Clean(h.DataDir) {
		bad("hostd.api.socket %s: not directly in hostd.dataDir; the socket's directory is made root-only, and qemu must reach the data dir", h.API.Socket)
	}
	if h.Guests.User == "root" || h.Guests.User == "0" {
		bad("hostd.guests.user: qemu must not run as root")
	}
	for c, hw := range h.ComputeTypes {
		if !c.Known() {
			bad("hostd.computeTypes.%s: not one of %v", c, catalog.KnownComputeTypes)
		}
		if hw.VCPUs < 1 || hw.MemoryMiB < 64 {
			bad("hostd.computeTypes.%s: vcpus ≥ 1 and memoryMiB ≥ 64 required", c)
		}
	}
	images := map[string]catalog.Image{}
	for i, img := range h.Images {
		if err := catalog.CheckID(catalog.KindImage, img.ID); err != nil {
			bad("hostd.images[%d].id: %v", i, err)
		}
		if img.OS != catalog.Linux && img.OS != catalog.Windows {
			bad("hostd.images[%d].os %q: must be linux or windows", i, img.OS)
		}
		if img.Dir == "" {
			bad("hostd.images[%d].dir: required", i)
		}
		if _, dup := images[img.ID]; dup {
			bad("hostd.images[%d].id %s: duplicate", i, img.ID)
		}
		images[img.ID] = img
	}
	bundles := map[string]bool{}
	for i, b := range h.Bundles {
		if err := catalog.CheckID(catalog.KindBundle, b.ID); err != nil {
			bad("hostd.bundles[%d].id: %v", i, err)
			continue
		}
		if bundles[b.ID] {
			bad("hostd.bundles[%d].id %s: duplicate", i, b.ID)
		}
		bundles[b.ID] = true
		img, ok := images[b.ImageID]
		if !ok {
			bad("hostd.bundles[%d].image %q: no such image in hostd.images", i, b.ImageID)
			continue
		}
		if err := b.Validate(img, h.ComputeTypes); err != nil {
			bad("hostd.bundles[%d]: %v", i, err)
		}
	}
	dirs := map[string]bool{}
	for i, d := range h.Directories {
		if err := catalog.CheckID(catalog.KindDirectory, d.ID); err != nil {
			bad("hostd.directories[%d].id: %v", i, err)
		}
		if dirs[d.ID] {
			bad("hostd.directories[%d].id %s: duplicate", i, d.ID)
		}
		dirs[d.ID] = true
		if d.Name == "" {
			bad("hostd.directories[%d].name: required (the directory's DNS name)", i)
		}
		if err := d.Login.Validate(); err != nil {
			bad("hostd.directories[%d] (%s): %v", i, d.ID, err)
		}
		users := map[string]bool{}
		for j, u := range d.Users {
			if u.UserName == "" {
				bad("hostd.directories[%d].users[%d].userName: required", i, j)
			}
			if users[u.UserName] {
				bad("hostd.directories[%d].users[%d].userName %q: duplicate", i, j, u.UserName)
			}
			users[u.UserName] = true
		}
	}
	return errors.Join(errs...)
}

// Image returns the image with this id.
func (h *Hostd) Image(id string) (catalog.Image, bool) {
	for _, img := range h.Images {
		if img.ID == id {
			return img, true
		}
	}
	return catalog.Image{}, false
}

// SiteZone is the site's time zone (SiteTimeZone); nil when unset.
func (h *Hostd) SiteZone() (*time.Location, error) {
	if h.SiteTimeZone == "" {
		return nil, nil
	}
	loc, err := time.LoadLocation(h.SiteTimeZone)
	if err != nil {
		return nil, fmt.Errorf("not a time zone (an IANA name such as Europe/Berlin): %w", err)
	}
	return loc, nil
}
