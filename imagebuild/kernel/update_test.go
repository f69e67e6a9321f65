package kernel_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/imagebuild/internal/testenv"
	"deskhost/imagebuild/kernel"
)

// TestFetchUpdatesLists: on a machine whose apt lists are empty (a fresh one; here, apt
// pointed at an empty lists directory through APT_CONFIG), the kernel cannot be resolved;
// with UpdateLists (make image's --apt-update) Fetch refreshes the lists first and gets it.
func TestFetchUpdatesLists(t *testing.T) {
	testenv.NeedTools(t, "apt-get", "apt-cache", "dpkg-deb")
	testenv.Need(t, os.Getuid() == 0, "apt-get update needs root")
	dir := t.TempDir()
	lists := filepath.Join(dir, "lists")
	if err := os.MkdirAll(filepath.Join(lists, "partial"), 0o755); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "apt.conf")
	// No binary caches: they would remember the machine's own lists.
	body := fmt.Sprintf("Dir::State::Lists %q;\nDir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n", lists+"/")
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("APT_CONFIG", conf)
	cache := testenv.CacheDir(t)

	_, err := kernel.Fetch(context.Background(), kernel.FetchOptions{CacheDir: cache})
	if err == nil || !strings.Contains(err.Error(), "run apt-get update?") {
		t.Fatalf("empty lists: Fetch = %v, want an error saying apt knows no such package", err)
	}
	var logged []string
	k, err := kernel.Fetch(context.Background(), kernel.FetchOptions{CacheDir: cache, UpdateLists: true,
		Log: func(f string, a ...any) { logged = append(logged, fmt.Sprintf(f, a...)); t.Logf(f, a...) }})
	if errors.Is(err, kernel.ErrDownload) {
		testenv.Need(t, false, err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	if k.Release == "" || !strings.HasPrefix(k.Package, "linux-image-") {
		t.Errorf("fetched %+v", k)
	}
	if len(logged) == 0 || !strings.Contains(logged[0], "apt-get update") {
		t.Errorf("first step logged %q, want the lists refresh", logged)
	}
	if m, _ := filepath.Glob(filepath.Join(lists, "*_Packages*")); len(m) == 0 {
		t.Errorf("no Packages lists in %s after the refresh", lists)
	}
}
