package service

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"unicode/utf8"

	"deskhost/hostd/fleet"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
)

// AWS's WorkspaceImageName and WorkspaceImageDescription.
var (
	imageNameRe = regexp.MustCompile(`^[a-zA-Z0-9_./()\\-]+$`)
	imageDescRe = regexp.MustCompile(`^[a-zA-Z0-9_./() -]+$`)
)

// ImageRequest registers a desktop image directory (what `imagebuild desktop` writes).
type ImageRequest struct {
	ID          string // empty: a new id
	Name        string // empty: the manifest's name
	Description string
	Dir         string
}

func getImage(tx store.Tx, id string) (catalog.Image, error) {
	if err := catalog.CheckID(catalog.KindImage, id); err != nil {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "ImageId: %v", err)
	}
	img, err := store.GetJSON[catalog.Image](tx, store.Images, id)
	if errors.Is(err, store.ErrNotFound) {
		return img, catalog.Errorf(catalog.ResourceNotFound, "image %s does not exist", id)
	}
	return img, err
}

// RegisterImage adds a desktop image directory on this host to the catalog, after reading
// its manifest and checking its files are there; the 21st image is refused.
func (s *Service) RegisterImage(ctx context.Context, r ImageRequest) (catalog.Image, error) {
	if r.Dir == "" {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "Directory is required: the desktop image directory (image.json beside its kernel, initramfs and root)")
	}
	di, err := desktopimage.Load(r.Dir)
	if err != nil {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "%v", err)
	}
	if r.ID == "" {
		r.ID = catalog.NewID(catalog.KindImage)
	} else if err := catalog.CheckID(catalog.KindImage, r.ID); err != nil {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "ImageId: %v", err)
	}
	if r.Name == "" {
		r.Name = di.Manifest.Name
	}
	if n := utf8.RuneCountInString(r.Name); n < 1 || n > 64 || !imageNameRe.MatchString(r.Name) {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "image name %q: 1 to 64 letters, digits and _ . / ( ) \\ -", r.Name)
	}
	if n := utf8.RuneCountInString(r.Description); r.Description != "" && (n > 256 || !imageDescRe.MatchString(r.Description)) {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "image description %q: up to 256 letters, digits, spaces and _ . / ( ) -", r.Description)
	}
	img := catalog.Image{ID: r.ID, Name: r.Name, Description: r.Description, OS: catalog.OS(di.Manifest.OS), Dir: di.Dir, Created: s.now(), Digest: di.Digest}
	err = s.catalogUpdate(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.Image](tx, store.Images)
		if err != nil {
			return err
		}
		if len(all) >= catalog.MaxImages {
			return catalog.Errorf(catalog.ResourceLimitExceeded, "there are %d images, the most this host keeps; delete one you no longer use", len(all))
		}
		for _, o := range all {
			switch {
			case o.ID == img.ID:
				return catalog.Errorf(catalog.ResourceAlreadyExists, "image %s already exists", img.ID)
			case o.Dir == img.Dir:
				return catalog.Errorf(catalog.ResourceAlreadyExists, "directory %s is already image %s", img.Dir, o.ID)
			}
		}
		// This host holds it: the fleet's other hosts fetch it from here by its digest.
		if err := fleet.HoldTx(tx, s.cfg.Host, img.Digest, img.Dir); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Images, img.ID, img)
	})
	if err != nil {
		return catalog.Image{}, err
	}
	s.log.Info("image registered", "image", img.ID, "name", img.Name, "os", string(img.OS), "dir", img.Dir)
	return img, nil
}

// DescribeWorkspaceImages lists images, all or by id, in id order.
func (s *Service) DescribeWorkspaceImages(ctx context.Context, imageIDs []string) ([]catalog.Image, error) {
	var out []catalog.Image
	err := s.store.View(func(tx store.Tx) error {
		all, err := store.ListJSON[catalog.Image](tx, store.Images)
		for _, i := range all {
			if len(imageIDs) == 0 || slices.Contains(imageIDs, i.ID) {
				out = append(out, i)
			}
		}
		return err
	})
	return out, err
}

// DeleteWorkspaceImage removes an image from the catalog (the files of a registered image
// stay where they are; those of one hostd made go):
// "you must first delete any bundles that are associated with the image". WorkSpaces
// whose root volumes were made from it also keep it: their VMs boot its kernel.
func (s *Service) DeleteWorkspaceImage(ctx context.Context, id string) error {
	var owned bool
	var dir string
	err := s.catalogUpdate(func(tx store.Tx) error {
		img, err := getImage(tx, id)
		if err != nil {
			return err
		}
		if img.Status() == catalog.ImagePending {
			// "The image also can't be in the PENDING state."
			return catalog.Errorf(catalog.InvalidResourceState, "image %s is PENDING: it can be deleted once it is AVAILABLE or ERROR", id)
		}
		owned = img.Owned
		dir = img.Dir
		bundles, err := store.ListJSON[catalog.Bundle](tx, store.Bundles)
		if err != nil {
			return err
		}
		for _, b := range bundles {
			if b.ImageID == id {
				what := "bundle " + b.ID
				if b.DeleteQueued {
					what += " (queued for deletion until its WorkSpaces are gone)"
				}
				return catalog.Errorf(catalog.ResourceAssociated, "image %s is used by %s; delete the bundle first", id, what)
			}
		}
		ws, err := liveWorkspaces(tx, func(w workspace.Workspace) bool { return w.ImageID == id })
		if err != nil {
			return err
		}
		if len(ws) > 0 {
			return catalog.Errorf(catalog.ResourceAssociated, "image %s is the root of %d WorkSpaces (%s); it stays until they are terminated", id, len(ws), ids(ws))
		}
		if err := tx.Delete(store.Tags, id); err != nil {
			return err
		}
		return tx.Delete(store.Images, id)
	})
	if err == nil {
		s.log.Info("image deleted", "image", id)
		// The files of an image hostd made go with it (a registered directory stays).
		if owned && s.cfg.ImageDir != "" && filepath.Dir(dir) == filepath.Clean(s.cfg.ImageDir) {
			if rerr := os.RemoveAll(dir); rerr != nil {
				s.log.Error("remove image files", "image", id, "dir", dir, "err", rerr)
			}
		}
	}
	return err
}

// LoadImage reads an image's files from its directory (the controller boots them).
func (s *Service) LoadImage(id string) (desktopimage.Image, error) { return s.LoadImageWith(id, nil) }

// LoadImageWith reads an image's files where this host holds them. In a fleet, a host
// other than the one the image was registered on holds it once it fetched it: fetch (if
// not nil) gets it by content hash from a host that holds it, verified, and says where it
// put it. Images registered before images had content hashes are read from their
// directory.
func (s *Service) LoadImageWith(id string, fetch func(digest string) (string, error)) (desktopimage.Image, error) {
	var img catalog.Image
	var held string
	var inFleet bool
	if err := s.store.View(func(tx store.Tx) error {
		var err error
		if img, err = getImage(tx, id); err != nil {
			return err
		}
		h, err := store.GetJSON[fleet.Host](tx, fleet.Hosts, s.cfg.Host)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		inFleet, held = true, h.Images[img.Digest]
		return err
	}); err != nil {
		return desktopimage.Image{}, err
	}
	dir := img.Dir
	if img.Digest != "" && inFleet {
		switch {
		case held != "":
			dir = held
		case fetch != nil:
			var err error
			if dir, err = fetch(img.Digest); err != nil {
				return desktopimage.Image{}, fmt.Errorf("image %s is not on this host and could not be fetched: %w", id, err)
			}
		}
	}
	di, err := desktopimage.Load(dir)
	if err != nil {
		return di, err
	}
	if img.Digest != "" && di.Digest != img.Digest {
		return di, fmt.Errorf("image %s: %s is not the image registered (its image.json changed since)", id, dir)
	}
	if di.Manifest.OS != string(img.OS) {
		return di, fmt.Errorf("image %s: the catalog says os %s, %s says %s", id, img.OS, img.Dir, di.Manifest.OS)
	}
	return di, nil
}

// --- Account ---

// Account is DescribeAccount's answer. Every WorkSpace on this host runs on the operator's
// own hardware with the operator's own images: dedicated tenancy is what the host is.
type Account struct {
	DedicatedTenancySupport string
	// ManagementRange is the WorkSpaces' management network, once netcfg has chosen it.
	ManagementRange netip.Prefix
}

// DescribeAccount reports the account's BYOL configuration.
func (s *Service) DescribeAccount(ctx context.Context) (Account, error) {
	a := Account{DedicatedTenancySupport: "ENABLED"}
	if s.cfg.ManagementRange != nil {
		if p, ok := s.cfg.ManagementRange(); ok {
			a.ManagementRange = p
		}
	}
	return a, nil
}

// ListAvailableManagementCidrRanges lists the /16 ranges inside constraint that overlap
// none of the host's networks nor the management network in use: ranges a management
// network could take.
func (s *Service) ListAvailableManagementCidrRanges(ctx context.Context, constraint string) ([]netip.Prefix, error) {
	c, err := netip.ParsePrefix(constraint)
	if err != nil || !c.Addr().Is4() {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "ManagementCidrRangeConstraint %q is not an IPv4 CIDR range", constraint)
	}
	if c.Masked() != c {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "ManagementCidrRangeConstraint %q has host bits set; did you mean %s?", constraint, c.Masked())
	}
	var used []netip.Prefix
	if s.cfg.HostNetworks != nil {
		used, err = s.cfg.HostNetworks()
	} else {
		used, err = InterfaceNetworks()
	}
	if err != nil {
		return nil, fmt.Errorf("host networks: %w", err)
	}
	if s.cfg.ManagementRange != nil {
		if p, ok := s.cfg.ManagementRange(); ok {
			used = append(used, p)
		}
	}
	var out []netip.Prefix
	if c.Bits() > 16 {
		return out, nil // no /16 fits inside
	}
	base := c.Addr().As4()
	first := uint32(base[0])<<8 | uint32(base[1])
	for i := uint32(0); i < 1<<(16-c.Bits()); i++ {
		n := first + i
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(n >> 8), byte(n), 0, 0}), 16)
		if !slices.ContainsFunc(used, p.Overlaps) {
			out = append(out, p)
		}
	}
	return out, nil
}

// InterfaceNetworks lists the IPv4 networks of this host's interfaces.
func InterfaceNetworks() ([]netip.Prefix, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	var out []netip.Prefix
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if p, err := netip.ParsePrefix(n.String()); err == nil && p.Addr().Is4() {
				out = append(out, p.Masked())
			}
		}
	}
	return out, nil
}
