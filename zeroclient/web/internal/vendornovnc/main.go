// Command vendornovnc refreshes zeroclient/web/static/novnc from the npm package pinned in
// zeroclient/web/novnc.lock: it downloads the tarball of that exact version, refuses it
// unless its sha512 is the lock's integrity, unpacks the files the web client serves
// (core/, vendor/pako/, the licences, package.json) and writes SHA256SUMS, which the web
// package's tests check the embedded copy against. Nothing is fetched at run time: the
// unpacked files are committed and embedded.
//
//	go run ./zeroclient/web/internal/vendornovnc            # from the repository root
//	go run ./zeroclient/web/internal/vendornovnc -tarball novnc-1.7.0.tgz   # offline, from `npm pack`
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// Lock is zeroclient/web/novnc.lock.
type Lock struct {
	Package   string `json:"package"`
	Version   string `json:"version"`
	Tarball   string `json:"tarball"`
	Integrity string `json:"integrity"` // npm's: "sha512-" + base64
}

// keep reports whether a path inside the package (without "package/") is served.
func keep(p string) bool {
	switch {
	case strings.HasPrefix(p, "core/") && strings.HasSuffix(p, ".js"),
		strings.HasPrefix(p, "vendor/pako/lib/") && strings.HasSuffix(p, ".js"),
		p == "vendor/pako/LICENSE", p == "LICENSE.txt", p == "AUTHORS", p == "package.json",
		strings.HasPrefix(p, "docs/LICENSE."):
		return true
	}
	return false
}

func main() {
	lockPath := flag.String("lock", "zeroclient/web/novnc.lock", "the pinned package")
	out := flag.String("out", "zeroclient/web/static/novnc", "where the files go (replaced)")
	local := flag.String("tarball", "", "use this tarball (e.g. from `npm pack`) instead of downloading")
	flag.Parse()
	if err := run(*lockPath, *out, *local); err != nil {
		fmt.Fprintln(os.Stderr, "vendornovnc:", err)
		os.Exit(1)
	}
}

func run(lockPath, out, local string) error {
	b, err := os.ReadFile(lockPath)
	if err != nil {
		return err
	}
	var l Lock
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return fmt.Errorf("%s: %w", lockPath, err)
	}
	want, ok := strings.CutPrefix(l.Integrity, "sha512-")
	if !ok || l.Version == "" || l.Tarball == "" {
		return fmt.Errorf("%s: needs version, tarball and a sha512- integrity", lockPath)
	}
	var tgz []byte
	if local != "" {
		tgz, err = os.ReadFile(local)
	} else {
		tgz, err = download(l.Tarball)
	}
	if err != nil {
		return err
	}
	sum := sha512.Sum512(tgz)
	if got := base64.StdEncoding.EncodeToString(sum[:]); got != want {
		return fmt.Errorf("%s: sha512 %s is not the lock's %s: refusing it", l.Tarball, got, want)
	}
	files, err := unpack(tgz)
	if err != nil {
		return err
	}
	var pkg struct{ Name, Version string }
	if err := json.Unmarshal(files["package.json"], &pkg); err != nil || pkg.Name != l.Package || pkg.Version != l.Version {
		return fmt.Errorf("the tarball's package.json says %s@%s (%v), the lock %s@%s", pkg.Name, pkg.Version, err, l.Package, l.Version)
	}
	if _, ok := files["core/rfb.js"]; !ok {
		return errors.New("the tarball has no core/rfb.js")
	}
	if err := os.RemoveAll(out); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	var sums strings.Builder
	for _, n := range names {
		p := filepath.Join(out, filepath.FromSlash(n))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[n], 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&sums, "%x  %s\n", sha256.Sum256(files[n]), n)
	}
	if err := os.WriteFile(filepath.Join(out, "SHA256SUMS"), []byte(sums.String()), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s@%s: %d files in %s\n", l.Package, l.Version, len(names), out)
	return nil
}

func download(url string) ([]byte, error) {
	c := &http.Client{Timeout: 2 * time.Minute}
	r, err := c.Get(url)
	if err != nil {
		return nil, fmt.Errorf("download %s: %w", url, err)
	}
	defer r.Body.Close()
	if r.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("download %s: %s", url, r.Status)
	}
	return io.ReadAll(io.LimitReader(r.Body, 64<<20))
}

// unpack returns the kept regular files of an npm tarball by their path in the package.
func unpack(tgz []byte) (map[string][]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(tgz))
	if err != nil {
		return nil, fmt.Errorf("tarball: %w", err)
	}
	tr := tar.NewReader(zr)
	files := map[string][]byte{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files, nil
		}
		if err != nil {
			return nil, fmt.Errorf("tarball: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name, ok := strings.CutPrefix(h.Name, "package/")
		if !ok || path.Clean(name) != name || strings.HasPrefix(name, "../") || !keep(name) {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, 8<<20))
		if err != nil {
			return nil, fmt.Errorf("tarball %s: %w", name, err)
		}
		files[name] = b
	}
}
