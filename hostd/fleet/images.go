package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/desktopimage"
)

// Images are the desktop images this host holds, by content hash (desktopimage.Image's
// Digest: the SHA-256 of image.json, which records every file's SHA-256). An image is
// registered on one host; another host that needs it for a WorkSpace fetches it from a
// host that holds it, over the fleet port (mutual TLS), and verifies every file before
// the WorkSpace boots from it.
type Images struct {
	Store store.Store
	Self  string
	// Dir is where fetched images are kept, one directory per content hash.
	Dir   string
	Peers *Peers
	Log   *slog.Logger
	once  onceMap
}

var digestRe = regexp.MustCompile(`^[0-9a-f]{64}$`)

// HoldTx records, in tx, that host holds the image with digest in dir.
func HoldTx(tx store.Tx, host, digest, dir string) error {
	h, err := store.GetJSON[Host](tx, Hosts, host)
	if errors.Is(err, store.ErrNotFound) {
		return nil // no fleet (the service alone): nobody to tell
	}
	if err != nil {
		return err
	}
	if h.Images[digest] == dir {
		return nil
	}
	if h.Images == nil {
		h.Images = map[string]string{}
	}
	h.Images[digest] = dir
	return store.PutJSON(tx, Hosts, host, h)
}

// held is the directory this host holds the image with digest in, if any.
func (im *Images) held(digest string) (string, bool, error) {
	var dir string
	err := im.Store.View(func(tx store.Tx) error {
		h, err := GetHost(tx, im.Self)
		dir = h.Images[digest]
		return err
	})
	return dir, dir != "", err
}

// Dir is the directory of the image with digest on this host: the one it holds it in, or
// one it fetches it into from a host that holds it, every file verified against its
// SHA-256 first. Concurrent callers for one image share one fetch.
func (im *Images) Path(ctx context.Context, digest string) (string, error) {
	if !digestRe.MatchString(digest) {
		return "", fmt.Errorf("image content hash %q: not a SHA-256", digest)
	}
	if dir, ok, err := im.held(digest); err != nil {
		return "", err
	} else if ok {
		if di, err := desktopimage.Load(dir); err == nil && di.Digest == digest {
			return dir, nil
		}
		im.Log.Warn("an image this host held is gone or changed; fetching it again", "digest", digest, "dir", dir)
	}
	err := im.once.do(digest, func() error { return im.fetch(ctx, digest) })
	if err != nil {
		return "", err
	}
	return filepath.Join(im.Dir, digest), nil
}

// fetch copies the image from the first host that holds it and answers.
func (im *Images) fetch(ctx context.Context, digest string) error {
	holders, err := livePeers(im.Store, im.Self, func(h Host) bool { return h.Images[digest] != "" })
	if err != nil {
		return err
	}
	if len(holders) == 0 {
		return fmt.Errorf("image %s: no live host of the fleet holds it", digest[:12])
	}
	var errs []error
	for _, h := range holders {
		t0 := time.Now()
		n, err := im.fetchFrom(ctx, h, digest)
		if err == nil {
			im.Log.Info("image fetched from a peer and verified", "digest", digest, "from", h, "bytes", n, "duration", time.Since(t0))
			return nil
		}
		im.Log.Warn("image fetch failed", "digest", digest, "from", h, "err", err)
		errs = append(errs, err)
	}
	return fmt.Errorf("image %s: %w", digest[:12], errors.Join(errs...))
}

func (im *Images) fetchFrom(ctx context.Context, host, digest string) (int64, error) {
	// Images are shared read-only by every WorkSpace's qemu, which runs unprivileged
	// (hostd/confine): their directories are searchable and their files readable by all.
	// They hold nothing secret (peers serve them to each other).
	if err := os.MkdirAll(im.Dir, 0o755); err != nil {
		return 0, err
	}
	tmp, err := os.MkdirTemp(im.Dir, ".fetch-"+digest[:12]+"-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	total, err := im.get(ctx, host, digest, desktopimage.ManifestName, tmp, digest)
	if err != nil {
		return 0, err
	}
	// The manifest matched the content hash: its file hashes are to be trusted.
	man, err := os.ReadFile(filepath.Join(tmp, desktopimage.ManifestName))
	if err != nil {
		return 0, err
	}
	di, err := manifestFiles(man)
	if err != nil {
		return 0, err
	}
	for name, sum := range di {
		n, err := im.get(ctx, host, digest, name, tmp, sum)
		if err != nil {
			return 0, err
		}
		total += n
	}
	img, err := desktopimage.Load(tmp)
	if err != nil || img.Digest != digest {
		return 0, fmt.Errorf("fetched image does not load as itself: %v", err)
	}
	// Verified: readable by qemu from here on (MkdirTemp made the directory 0700).
	if err := os.Chmod(tmp, 0o755); err != nil {
		return 0, err
	}
	final := filepath.Join(im.Dir, digest)
	os.RemoveAll(final)
	if err := os.Rename(tmp, final); err != nil {
		return 0, err
	}
	return total, im.Store.Update(func(tx store.Tx) error { return HoldTx(tx, im.Self, digest, final) })
}

// manifestFiles are the files an image's manifest names, with their SHA-256; an image
// whose manifest leaves one without is not fetched (it could not be verified).
func manifestFiles(manifest []byte) (map[string]string, error) {
	m, err := desktopimage.ParseManifest(manifest)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range []string{m.Kernel, m.Initrd, m.Root} {
		sum, ok := m.SHA256[name]
		if !ok || !digestRe.MatchString(sum) {
			return nil, fmt.Errorf("image manifest: %s has no SHA-256: it cannot be fetched and verified", name)
		}
		if name == "" || filepath.Base(name) != name || name == desktopimage.ManifestName {
			return nil, fmt.Errorf("image manifest: file %q must be a plain name in the image directory", name)
		}
		out[name] = sum
	}
	return out, nil
}

// get fetches one file into dir, checking its SHA-256 against want as it is written.
func (im *Images) get(ctx context.Context, host, digest, name, dir, want string) (int64, error) {
	resp, err := im.Peers.do(ctx, host, http.MethodGet, "/fleet/v1/images/"+digest+"/"+name, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return n, fmt.Errorf("%s: %w", name, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return n, fmt.Errorf("%s from host %s has SHA-256 %s, want %s: not used", name, host, got, want)
	}
	return n, nil
}

// image serves a file of an image this host holds to a peer.
func (s *Server) image(w http.ResponseWriter, r *http.Request, from string) {
	digest, name := r.PathValue("digest"), r.PathValue("file")
	if !digestRe.MatchString(digest) || s.Images == nil {
		httpError(w, http.StatusNotFound, "no such image")
		return
	}
	dir, ok, err := s.Images.held(digest)
	if err != nil || !ok {
		httpError(w, http.StatusNotFound, "this host does not hold image "+digest)
		return
	}
	img, err := desktopimage.Load(dir)
	if err != nil || img.Digest != digest {
		httpError(w, http.StatusNotFound, "this host's copy of image "+digest+" is gone or changed")
		return
	}
	files := []string{desktopimage.ManifestName, img.Manifest.Kernel, img.Manifest.Initrd, img.Manifest.Root}
	if !slices.Contains(files, name) {
		httpError(w, http.StatusNotFound, "image "+digest+" has no file "+name)
		return
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		httpError(w, http.StatusNotFound, err.Error())
		return
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	n, err := io.Copy(w, f)
	s.Log.Debug("image file served to a peer", "digest", digest, "file", name, "peer", from, "bytes", n, "err", err)
}
