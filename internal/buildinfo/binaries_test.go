package buildinfo

import (
	"debug/buildinfo"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/internal/testenv"
)

// TestBinaries builds every binary the way `make build` does and runs each one's
// `version`, `-h` and `--help`, and `-h` of its daemon command: all exit 0, and version
// names the program, the module and the checkout's revision.
func TestBinaries(t *testing.T) {
	if _, err := exec.LookPath("make"); err != nil {
		testenv.Missing(t, "make is not installed (the binaries are built with `make build`)")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if out, err := exec.Command("make", "-C", root, "build", "BIN="+bin).CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	head := ""
	if out, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output(); err == nil {
		head = strings.TrimSpace(string(out))
	}
	for name, daemonHelp := range map[string][]string{
		"hostd":      {"serve", "-h"},
		"netcfg":     {"apply", "-h"},
		"zeroclient": {"serve", "-h"},
		"imagebuild": {"serve", "-h"},
		"libvirtrun": {"start", "-h"},
	} {
		path := filepath.Join(bin, name)
		out, err := exec.Command(path, "version").CombinedOutput()
		line := strings.TrimSpace(string(out))
		if err != nil || !strings.HasPrefix(line, name+" deskhost ") || strings.Count(line, "\n") != 0 {
			t.Errorf("%s version: %v %q", name, err, line)
		}
		if head != "" && !strings.Contains(line, " revision "+head) {
			t.Errorf("%s version: %q lacks the checkout's revision %s", name, line, head)
		}
		for _, args := range [][]string{{"-h"}, {"--help"}, daemonHelp} {
			out, err := exec.Command(path, args...).CombinedOutput()
			if err != nil || len(out) == 0 {
				t.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
			}
		}
		// The archived gopkg.in/yaml.v3 is linked into no binary.
		bi, err := buildinfo.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, d := range bi.Deps {
			if d.Path == "gopkg.in/yaml.v3" {
				t.Errorf("%s links gopkg.in/yaml.v3 %s", name, d.Version)
			}
		}
	}
	if head == "" {
		t.Log("no git checkout: revisions not compared")
	}
}

func TestString(t *testing.T) {
	i := Info{Program: "hostd", Module: "deskhost", Version: "(devel)", Revision: "abc", Time: "2026-12-05T13:00:00Z", Modified: true, GoVersion: "go1.26.8"}
	if got, want := i.String(), "hostd deskhost (devel) revision abc 2026-12-05T13:00:00Z modified go1.26.8"; got != want {
		t.Errorf("%q, want %q", got, want)
	}
	i.Revision = ""
	if got := i.String(); !strings.Contains(got, "revision unknown") {
		t.Errorf("no revision: %q", got)
	}
}
