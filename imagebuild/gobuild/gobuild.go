// Package gobuild builds the project's Go programs for the appliance image: static
// (CGO_ENABLED=0), for linux/amd64 at the baseline ISA, without paths, build ids or VCS
// stamps, so the same source gives the same bytes.
package gobuild

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ErrNoPackage means the package does not exist (or has no Go files): an optional
// program that is not written yet.
var ErrNoPackage = errors.New("no such Go package")

// GoCommand finds the go command: on PATH, in $GOROOT/bin, or /usr/local/go/bin.
func GoCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	for _, d := range []string{os.Getenv("GOROOT"), "/usr/local/go"} {
		if d == "" {
			continue
		}
		p := filepath.Join(d, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("gobuild: the go command is not on PATH nor in /usr/local/go/bin")
}

// Options of a build.
type Options struct {
	// Dir is a directory inside the module to build from ("" = the current directory).
	Dir string
	// Ldflags are added after "-s -w -buildid=" (e.g. "-X main.version=0.4").
	Ldflags string
}

// Build builds package pkg (an import path) into out.
func Build(ctx context.Context, pkg, out string, o Options) error {
	goBin, err := GoCommand()
	if err != nil {
		return err
	}
	list := exec.CommandContext(ctx, goBin, "list", "-f", "{{.Name}}", pkg)
	list.Dir = o.Dir
	list.Env = env()
	b, err := list.CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(b))
		if strings.Contains(msg, "no Go files") || strings.Contains(msg, "is not in std") ||
			strings.Contains(msg, "cannot find") || strings.Contains(msg, "no required module") || strings.Contains(msg, "matched no packages") {
			return fmt.Errorf("%w: %s: %s", ErrNoPackage, pkg, msg)
		}
		return fmt.Errorf("gobuild: go list %s: %v: %s", pkg, err, msg)
	}
	if name := strings.TrimSpace(string(b)); name != "main" {
		return fmt.Errorf("gobuild: %s is package %s, not a program (package main)", pkg, name)
	}
	ld := "-s -w -buildid="
	if o.Ldflags != "" {
		ld += " " + o.Ldflags
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags="+ld, "-o", out, pkg)
	cmd.Dir = o.Dir
	cmd.Env = env()
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("gobuild: building %s: %v: %s", pkg, err, strings.TrimSpace(string(b)))
	}
	return nil
}

func env() []string {
	return append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOAMD64=v1", "GOFLAGS=")
}

// Version reports the go command's version ("go1.26.8").
func Version(ctx context.Context) string {
	goBin, err := GoCommand()
	if err != nil {
		return ""
	}
	b, err := exec.CommandContext(ctx, goBin, "env", "GOVERSION").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Commit describes the source tree of dir: the git commit, "+dirty" when the work tree
// has changes, or "" outside git.
func Commit(ctx context.Context, dir string) string {
	c := exec.CommandContext(ctx, "git", "rev-parse", "--short=12", "HEAD")
	c.Dir = dir
	b, err := c.Output()
	if err != nil {
		return ""
	}
	commit := strings.TrimSpace(string(b))
	st := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no")
	st.Dir = dir
	if out, err := st.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
		commit += "+dirty"
	}
	return commit
}
