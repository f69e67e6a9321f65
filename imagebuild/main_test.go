package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCLI(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "usage: imagebuild COMMAND"},
		{[]string{"help"}, 0, "desktop"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"desktop", "-h"}, 0, "-out"},
		{[]string{"desktop", "--no-such-flag"}, 2, "flag provided but not defined"},
		{[]string{"desktop", "extra"}, 2, "unexpected arguments: extra"},
		{[]string{"desktop", "-q", "--boot", "floppy", "--out", filepath.Join(t.TempDir(), "o")}, 1, `boot protocol "floppy"`},
		{[]string{"desktop", "-q", "--initrd-compression", "zstd", "--out", filepath.Join(t.TempDir(), "o")}, 1, `compression "zstd"`},
		{[]string{"desktop", "-q", "--out", ""}, 1, "no output directory"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(ctx, tc.args, &stdout, &stderr)
		if code != tc.code || !strings.Contains(stderr.String(), tc.stderr) {
			t.Errorf("%v: exit %d, stderr %q; want %d and %q", tc.args, code, stderr.String(), tc.code, tc.stderr)
		}
	}
	// An output directory that cannot be created.
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o644)
	var stderr bytes.Buffer
	if code := run(ctx, []string{"desktop", "-q", "--out", filepath.Join(f, "sub", "out"), "--cache", t.TempDir()}, &bytes.Buffer{}, &stderr); code != 1 || !strings.Contains(stderr.String(), "output directory") {
		t.Errorf("unwritable output: %d %q", code, stderr.String())
	}
}
