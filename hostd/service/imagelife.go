package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"unicode/utf8"

	"deskhost/hostd/fleet"
	"deskhost/hostd/store"
	"deskhost/hostd/workspace"
	"deskhost/internal/catalog"
	"deskhost/internal/desktopimage"
)

// The images hostd makes (guide catalog §4.1): CreateWorkspaceImage captures a WorkSpace's
// root volume (hostd/controller/capture.go), CopyWorkspaceImage copies an image on this
// host, ImportWorkspaceImage brings in an operator's own image (hostd/controller/import.go
// fetches, converts and test-boots it). Each lives in Config.ImageDir/<image id>, PENDING until it is
// complete, and counts against the 20-image quota from the moment it is asked for.

// CreateImageRequest is CreateWorkspaceImage's input.
type CreateImageRequest struct {
	Name, Description, WorkspaceID string
	Tags                           []catalog.Tag
}

func checkImageText(name, desc string, descRequired bool) error {
	if n := utf8.RuneCountInString(name); n < 1 || n > 64 || !imageNameRe.MatchString(name) {
		return catalog.Errorf(catalog.InvalidParameterValues, "image name %q: 1 to 64 letters, digits and _ . / ( ) \\ -", name)
	}
	if desc == "" && descRequired {
		return catalog.Errorf(catalog.InvalidParameterValues, "the image description is required")
	}
	if n := utf8.RuneCountInString(desc); desc != "" && (n > 256 || !imageDescRe.MatchString(desc)) {
		return catalog.Errorf(catalog.InvalidParameterValues, "image description %q: up to 256 letters, digits, spaces and _ . / ( ) -", desc)
	}
	return nil
}

// checkNewImage refuses a new image over the quota or named like an existing one.
func checkNewImage(tx store.Tx, name string) error {
	all, err := store.ListJSON[catalog.Image](tx, store.Images)
	if err != nil {
		return err
	}
	if len(all) >= catalog.MaxImages {
		return catalog.Errorf(catalog.ResourceLimitExceeded, "there are %d images, the most this host keeps (the guide: 20 WorkSpace images per Region); delete one you no longer use", len(all))
	}
	for _, o := range all {
		if o.Name == name {
			return catalog.Errorf(catalog.ResourceAlreadyExists, "image %s is already named %q", o.ID, name)
		}
	}
	return nil
}

// availableImage is an image a bundle may point to: one that exists and is AVAILABLE.
func availableImage(tx store.Tx, id string) (catalog.Image, error) {
	img, err := getImage(tx, id)
	if err != nil {
		return img, err
	}
	if st := img.Status(); st != catalog.ImageAvailable {
		return img, catalog.Errorf(catalog.InvalidResourceState, "image %s is %s; only an AVAILABLE image can be used", id, st)
	}
	return img, nil
}

// CreateWorkspaceImage starts capturing a WorkSpace's root volume as a new image: the
// WorkSpace is SUSPENDED and the image PENDING until the controller has sanitised and
// copied it; then the image is AVAILABLE (or ERROR, with the reason) and the WorkSpace
// AVAILABLE again.
func (s *Service) CreateWorkspaceImage(ctx context.Context, r CreateImageRequest) (catalog.Image, error) {
	if err := checkImageText(r.Name, r.Description, true); err != nil {
		return catalog.Image{}, err
	}
	if err := catalog.CheckID(catalog.KindWorkspace, r.WorkspaceID); err != nil {
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "WorkspaceId: %v", err)
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return catalog.Image{}, err
	}
	if s.cfg.ImageDir == "" {
		return catalog.Image{}, catalog.Errorf(catalog.OperationNotSupported, "this host keeps no images of its own (hostd has no image directory)")
	}
	id := catalog.NewID(catalog.KindImage)
	img := catalog.Image{ID: id, Name: r.Name, Description: r.Description, Dir: filepath.Join(s.cfg.ImageDir, id),
		Created: s.now(), State: catalog.ImagePending, SourceWorkspace: r.WorkspaceID, Owned: true}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.catalogUpdate(func(tx store.Tx) error {
		w, err := store.GetJSON[workspace.Workspace](tx, store.Workspaces, r.WorkspaceID)
		if errors.Is(err, store.ErrNotFound) || err == nil && w.State == workspace.Terminated {
			return catalog.Errorf(catalog.ResourceNotFound, "WorkSpace %s does not exist", r.WorkspaceID)
		}
		if err != nil {
			return err
		}
		if err := w.CheckOp(workspace.OpCreateImage); err != nil {
			return err
		}
		if err := CheckImageSource(w); err != nil {
			return err
		}
		src, err := getImage(tx, w.ImageID)
		if err != nil {
			return catalog.Errorf(catalog.ResourceUnavailable, "WorkSpace %s was made from image %s, which this host no longer has: its kernel is what the new image would boot", w.ID, w.ImageID)
		}
		if src.OS != catalog.Linux {
			return catalog.Errorf(catalog.OperationNotSupported, "WorkSpace %s runs %s; this host captures Linux WorkSpaces only", w.ID, src.OS)
		}
		img.OS, img.SourceImage = src.OS, src.ID
		if err := checkNewImage(tx, r.Name); err != nil {
			return err
		}
		if len(r.Tags) > 0 {
			if err := putTags(tx, id, r.Tags); err != nil {
				return err
			}
		}
		w.CaptureImage = id
		w.SetState(workspace.Suspended, s.now())
		if err := store.PutJSON(tx, store.Workspaces, w.ID, w); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Images, id, img)
	})
	if err != nil {
		return catalog.Image{}, err
	}
	s.log.Info("image capture accepted", "image", id, "workspace", r.WorkspaceID, "name", r.Name)
	s.waker.Wake(r.WorkspaceID)
	return img, nil
}

// CopyImageRequest is CopyWorkspaceImage's input. SourceRegion must be this host's region
// (the API checks it: the service has no regions).
type CopyImageRequest struct {
	Name, Description, SourceImageID string
	Tags                             []catalog.Tag
}

// CopyWorkspaceImage makes "an identical image with its own unique identifier": its
// files are hard links to the source's where the file system allows (copies otherwise).
func (s *Service) CopyWorkspaceImage(ctx context.Context, r CopyImageRequest) (catalog.Image, error) {
	if err := checkImageText(r.Name, r.Description, false); err != nil {
		return catalog.Image{}, err
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return catalog.Image{}, err
	}
	if s.cfg.ImageDir == "" {
		return catalog.Image{}, catalog.Errorf(catalog.OperationNotSupported, "this host keeps no images of its own (hostd has no image directory)")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var src catalog.Image
	if err := s.store.View(func(tx store.Tx) error {
		var err error
		if src, err = availableImage(tx, r.SourceImageID); err != nil {
			return err
		}
		return checkNewImage(tx, r.Name)
	}); err != nil {
		return catalog.Image{}, err
	}
	di, err := s.LoadImage(src.ID)
	if err != nil {
		return catalog.Image{}, catalog.Errorf(catalog.ResourceUnavailable, "image %s: %v", src.ID, err)
	}
	id := catalog.NewID(catalog.KindImage)
	img := catalog.Image{ID: id, Name: r.Name, Description: r.Description, OS: src.OS, Dir: filepath.Join(s.cfg.ImageDir, id),
		Created: s.now(), State: catalog.ImageAvailable, SourceImage: src.ID, Owned: true}
	if img.Digest, err = linkImage(di, img.Dir, r.Name); err != nil {
		os.RemoveAll(img.Dir)
		return catalog.Image{}, fmt.Errorf("copy image %s: %w", src.ID, err)
	}
	err = s.catalogUpdate(func(tx store.Tx) error {
		if _, err := availableImage(tx, src.ID); err != nil {
			return err
		}
		if err := checkNewImage(tx, r.Name); err != nil {
			return err
		}
		if len(r.Tags) > 0 {
			if err := putTags(tx, id, r.Tags); err != nil {
				return err
			}
		}
		if err := fleet.HoldTx(tx, s.cfg.Host, img.Digest, img.Dir); err != nil {
			return err
		}
		return store.PutJSON(tx, store.Images, id, img)
	})
	if err != nil {
		os.RemoveAll(img.Dir)
		return catalog.Image{}, err
	}
	s.log.Info("image copied", "image", id, "source", src.ID, "name", r.Name)
	return img, nil
}

// linkImage puts di's files in dir, and an image.json naming them under name (so that the
// copy has a content hash of its own, which the fleet's hosts fetch it by). It answers
// that hash.
func linkImage(di desktopimage.Image, dir, name string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	for _, f := range []string{di.Kernel, di.Initrd, di.Root} {
		dst := filepath.Join(dir, filepath.Base(f))
		if err := os.Link(f, dst); err == nil {
			continue
		}
		if err := copyFile(f, dst); err != nil {
			return "", err
		}
	}
	m := di.Manifest
	m.Name = name
	m.Kernel, m.Initrd, m.Root = filepath.Base(di.Kernel), filepath.Base(di.Initrd), filepath.Base(di.Root)
	return desktopimage.WriteManifest(dir, m)
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// imageFailure is recorded on an image that could not be made.
func imageFailure(code, msg string) func(*catalog.Image) {
	return func(i *catalog.Image) {
		i.State, i.ErrorCode, i.ErrorMessage = catalog.ImageError, code, strings.TrimSpace(msg)
	}
}

// ImportImageRequest is ImportWorkspaceImage's input, with deskhost's Source in place of
// AWS's Ec2ImageId (no EC2 here): an absolute path on this host or an http(s) URL, of a
// desktop image directory (imagebuild desktop's output) or a single disk image file,
// qcow2 or raw, whose root filesystem is ext4 (on the whole disk or a partition).
// BaseImage, optional, is the image whose kernel and initramfs (with the guest agent)
// the imported disk boots with; by default the newest image registered from imagebuild.
type ImportImageRequest struct {
	Source, IngestionProcess, Name, Description, BaseImage string
	Tags                                                   []catalog.Tag
}

// ImportWorkspaceImage records a PENDING image the controller then fetches, converts and
// test-boots to a healthy agent (hostd/controller/import.go); it ends AVAILABLE, or ERROR
// with the reason.
func (s *Service) ImportWorkspaceImage(ctx context.Context, r ImportImageRequest) (catalog.Image, error) {
	if err := checkImageText(r.Name, r.Description, true); err != nil {
		return catalog.Image{}, err
	}
	switch r.IngestionProcess {
	case "BYOL_REGULAR", "BYOL_REGULAR_BYOP":
	case "BYOL_REGULAR_WSP":
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "IngestionProcess %s: Linux WorkSpaces support only PCoIP; use BYOL_REGULAR", r.IngestionProcess)
	case "BYOL_GRAPHICS", "BYOL_GRAPHICSPRO", "BYOL_GRAPHICS_G4DN", "BYOL_GRAPHICS_G4DN_BYOP":
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "IngestionProcess %s: this host has no GPUs; use BYOL_REGULAR", r.IngestionProcess)
	default:
		return catalog.Image{}, catalog.Errorf(catalog.InvalidParameterValues, "IngestionProcess %q must be BYOL_REGULAR", r.IngestionProcess)
	}
	if err := CheckImportSource(r.Source); err != nil {
		return catalog.Image{}, err
	}
	if err := catalog.CheckTags(r.Tags); err != nil {
		return catalog.Image{}, err
	}
	if s.cfg.ImageDir == "" {
		return catalog.Image{}, catalog.Errorf(catalog.OperationNotSupported, "this host keeps no images of its own (hostd has no image directory)")
	}
	id := catalog.NewID(catalog.KindImage)
	img := catalog.Image{ID: id, Name: r.Name, Description: r.Description, OS: catalog.Linux, Dir: filepath.Join(s.cfg.ImageDir, id),
		Created: s.now(), State: catalog.ImagePending, Import: r.Source, Owned: true, Maker: s.cfg.Host}
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.catalogUpdate(func(tx store.Tx) error {
		base, err := baseImage(tx, r.BaseImage)
		if err != nil {
			return err
		}
		img.BaseImage = base
		if err := checkNewImage(tx, r.Name); err != nil {
			return err
		}
		if len(r.Tags) > 0 {
			if err := putTags(tx, id, r.Tags); err != nil {
				return err
			}
		}
		return store.PutJSON(tx, store.Images, id, img)
	})
	if err != nil {
		return catalog.Image{}, err
	}
	s.log.Info("image import accepted", "image", id, "source", r.Source, "base", img.BaseImage)
	s.waker.Wake(id)
	return img, nil
}

// CheckImportSource accepts an absolute local path or an http(s) URL with a host.
func CheckImportSource(src string) error {
	switch {
	case src == "":
		return catalog.Errorf(catalog.InvalidParameterValues, "the import source is required: an absolute path on this host or an http(s) URL of a qcow2 or raw disk image, or of an imagebuild desktop image directory (a path)")
	case strings.HasPrefix(src, "ami-"):
		return catalog.Errorf(catalog.InvalidParameterValues, "%s is an EC2 image id; this host has no EC2: import a disk image file or URL instead", src)
	case strings.HasPrefix(src, "http://"), strings.HasPrefix(src, "https://"):
		u, err := url.Parse(src)
		if err != nil || u.Host == "" {
			return catalog.Errorf(catalog.InvalidParameterValues, "import source %q is not a valid URL", src)
		}
	case filepath.IsAbs(src):
		if filepath.Clean(src) != src {
			return catalog.Errorf(catalog.InvalidParameterValues, "import source %q is not a clean path", src)
		}
		if _, err := os.Stat(src); err != nil {
			return catalog.Errorf(catalog.InvalidParameterValues, "import source %s: %v", src, errors.Unwrap(err))
		}
	default:
		return catalog.Errorf(catalog.InvalidParameterValues, "import source %q is neither an absolute path nor an http(s) URL", src)
	}
	return nil
}

// baseImage is the image whose boot files an import uses: id if given (AVAILABLE, Linux),
// else the newest AVAILABLE Linux image registered from imagebuild (not made by hostd).
func baseImage(tx store.Tx, id string) (string, error) {
	if id != "" {
		img, err := availableImage(tx, id)
		if err != nil {
			return "", err
		}
		if img.OS != catalog.Linux {
			return "", catalog.Errorf(catalog.InvalidParameterValues, "base image %s is %s, not Linux", id, img.OS)
		}
		return id, nil
	}
	all, err := store.ListJSON[catalog.Image](tx, store.Images)
	if err != nil {
		return "", err
	}
	var best catalog.Image
	for _, i := range all {
		if i.OS == catalog.Linux && !i.Owned && i.Status() == catalog.ImageAvailable && (best.ID == "" || i.Created.After(best.Created)) {
			best = i
		}
	}
	if best.ID == "" {
		return "", catalog.Errorf(catalog.ResourceUnavailable, "no desktop image to boot the import with: register one imagebuild made first (hostd images register --dir ...)")
	}
	return best.ID, nil
}
