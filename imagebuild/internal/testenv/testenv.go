// Package testenv holds the test helpers imagebuild's packages share: the CI skip rule
// and where the kernel download cache is.
package testenv

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Need skips the test when a prerequisite is missing, except in CI (CI=true), where a
// missing prerequisite fails the test.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI: %s", why)
	}
	t.Skipf("skipped outside CI: %s", why)
}

// NeedTools requires commands on PATH (or in /usr/sbin, /sbin).
func NeedTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		_, err := exec.LookPath(tool)
		if err != nil {
			for _, d := range []string{"/usr/sbin", "/sbin"} {
				if _, err2 := os.Stat(filepath.Join(d, tool)); err2 == nil {
					err = nil
					break
				}
			}
		}
		Need(t, err == nil, fmt.Sprintf("%s is not installed (bash scripts/install-deps.sh installs scripts/packages/*.txt)", tool))
	}
}

// ModuleRoot is the directory holding go.mod.
func ModuleRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

// CacheDir is where kernel downloads are kept between test runs: $DESKHOST_CACHE, or
// build/cache in the checkout (what `go run ./imagebuild desktop` uses by default).
func CacheDir(t testing.TB) string {
	t.Helper()
	if d := os.Getenv("DESKHOST_CACHE"); d != "" {
		return d
	}
	return filepath.Join(ModuleRoot(t), "build", "cache")
}
