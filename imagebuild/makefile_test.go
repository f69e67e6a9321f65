package main

import (
	"os/exec"
	"strings"
	"testing"

	"deskhost/imagebuild/internal/testenv"
)

// make image resolves the kernel from refreshed apt lists (TestFetchUpdatesLists shows
// what --apt-update does).
func TestMakeImageUpdatesAptLists(t *testing.T) {
	testenv.NeedTools(t, "make")
	out, err := exec.Command("make", "-C", "..", "-n", "image").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n image: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "imagebuild desktop --apt-update ") {
		t.Errorf("make image does not pass --apt-update:\n%s", out)
	}
}
