// Package desktopimage is the on-disk contract between imagebuild, which writes a desktop
// image directory, and hostd, which boots WorkSpaces from it: image.json beside a kernel,
// an initramfs and a qcow2 root filesystem.
package desktopimage

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"deskhost/internal/digest"
)

// ManifestName is the manifest's file name in an image directory.
const ManifestName = "image.json"

// Manifest describes a desktop image. File names are relative to the image directory.
type Manifest struct {
	Name                 string            `json:"name"`
	OS                   string            `json:"os"`
	Kernel               string            `json:"kernel"`
	Initrd               string            `json:"initrd"`
	Root                 string            `json:"root"`
	RootFormat           string            `json:"rootFormat"`
	RootVirtualSize      int64             `json:"rootVirtualSize"`
	Cmdline              string            `json:"cmdline"`
	AgentChannel         string            `json:"agentChannel"`
	AgentVersion         string            `json:"agentVersion"`
	BootProtocol         string            `json:"bootProtocol"`
	KernelVersion        string            `json:"kernelVersion"`
	KernelPackage        string            `json:"kernelPackage"`
	KernelPackageVersion string            `json:"kernelPackageVersion"`
	InitrdCompression    string            `json:"initrdCompression"`
	Modules              []string          `json:"modules"`
	SHA256               map[string]string `json:"sha256"`
}

// Image is a loaded image: its manifest and the absolute paths of its files.
type Image struct {
	Dir      string
	Manifest Manifest
	// Digest is the image's content hash: the SHA-256 (hex) of its image.json, which
	// records every file's SHA-256. Hosts of a fleet fetch images from each other by it.
	Digest string
	Kernel string
	Initrd string
	Root   string
}

// ParseManifest decodes an image.json strictly (an unknown field is an error).
func ParseManifest(b []byte) (Manifest, error) {
	var m Manifest
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("%s: %w", ManifestName, err)
	}
	return m, nil
}

// Load reads dir/image.json and checks that the files it names exist inside dir.
func Load(dir string) (Image, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Image{}, err
	}
	b, err := os.ReadFile(filepath.Join(abs, ManifestName))
	if err != nil {
		return Image{}, fmt.Errorf("desktop image %s: %w (build it with: make image)", abs, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return Image{}, fmt.Errorf("desktop image %s: %w", abs, err)
	}
	sum := sha256.Sum256(b)
	img := Image{Dir: abs, Manifest: m, Digest: hex.EncodeToString(sum[:])}
	for _, f := range []struct {
		field, name string
		dst         *string
	}{{"kernel", m.Kernel, &img.Kernel}, {"initrd", m.Initrd, &img.Initrd}, {"root", m.Root, &img.Root}} {
		if f.name == "" || filepath.IsAbs(f.name) || strings.Contains(f.name, "..") {
			return Image{}, fmt.Errorf("desktop image %s: %s %q must name a file in the image directory", abs, f.field, f.name)
		}
		p := filepath.Join(abs, f.name)
		if _, err := os.Stat(p); err != nil {
			return Image{}, fmt.Errorf("desktop image %s: %s: %w", abs, f.field, err)
		}
		*f.dst = p
	}
	if m.OS != "linux" && m.OS != "windows" {
		return Image{}, fmt.Errorf("desktop image %s: os %q must be linux or windows", abs, m.OS)
	}
	if m.RootFormat != "" && m.RootFormat != "qcow2" {
		return Image{}, errors.New("desktop image " + abs + ": root must be qcow2")
	}
	return img, nil
}

// WriteManifest writes m as dir/image.json (through a temporary file renamed into place)
// and answers its content hash, the Digest Load will find.
func WriteManifest(dir string, m Manifest) (string, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return "", err
	}
	b = append(b, '\n')
	tmp := filepath.Join(dir, ManifestName+".tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestName)); err != nil {
		return "", err
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:]), nil
}

// Verify checks each file against the SHA256 the manifest records.
func (img Image) Verify() error {
	for name, p := range map[string]string{img.Manifest.Kernel: img.Kernel, img.Manifest.Initrd: img.Initrd, img.Manifest.Root: img.Root} {
		want, ok := img.Manifest.SHA256[name]
		if !ok {
			return fmt.Errorf("desktop image %s: %s has no sha256 in %s", img.Dir, name, ManifestName)
		}
		got, err := digest.File(p)
		if err != nil {
			return fmt.Errorf("desktop image %s: %w", img.Dir, err)
		}
		if got != want {
			return fmt.Errorf("desktop image %s: %s has SHA256 %s, %s says %s", img.Dir, name, got, ManifestName, want)
		}
	}
	return nil
}
