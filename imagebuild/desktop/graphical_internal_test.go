package desktop

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"deskhost/internal/guestservice"
)

func TestDpkgVersion(t *testing.T) {
	p := filepath.Join(t.TempDir(), "status")
	status := "Package: linux-image-6.1.0-57-amd64-unsigned\nVersion: 1\n\n" +
		"Package: linux-image-6.1.0-57-amd64\nStatus: install ok installed\nVersion: 6.1.158-1\n\n" +
		"Package: xfwm4\nVersion: 4.18.0-1\n"
	if err := os.WriteFile(p, []byte(status), 0o644); err != nil {
		t.Fatal(err)
	}
	if v := dpkgVersion(p, "linux-image-6.1.0-57-amd64"); v != "6.1.158-1" {
		t.Errorf("version %q", v)
	}
	if v := dpkgVersion(p, "missing"); v != "" {
		t.Errorf("missing package: %q", v)
	}
}

// The embedded guest files: scripts are executable in the image, every unit the image
// enables is there, and the user setup runs before LightDM and the agent.
func TestGraphicalFiles(t *testing.T) {
	err := fs.WalkDir(graphicalFiles, "graphical", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := graphicalFiles.ReadFile(p)
		if strings.HasPrefix(p, "graphical/usr/lib/deskhost/") && !strings.HasPrefix(string(b), "#!/bin/sh\n") {
			t.Errorf("%s: not a /bin/sh script", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range graphicalUnits {
		if !strings.HasPrefix(u, "deskhost-") {
			continue
		}
		if !slices.Contains(guestservice.Units, u) {
			t.Errorf("unit %s is enabled but guestservice does not install it", u)
		}
	}
}
