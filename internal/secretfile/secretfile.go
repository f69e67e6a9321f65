// Package secretfile reads a secret (an API key's secret, a bind password, a RADIUS shared
// secret, the console password's hash) from a file of its own, as the appliance keeps them
// on /perm: never in the image, the PXE bundle or the kernel command line. A file that
// its group or others may read is refused, with an error naming it, since the secret is
// then no longer only root's.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"deskhost/internal/atomicfile"
)

// MaxSize bounds a secret file: secrets are short, and a large file is a mistake.
const MaxSize = 64 << 10

// Read returns the secret in path without its trailing line end. The file must be a
// regular file with no permission bits for group or others (0600 or 0400).
func Read(path string) (string, error) {
	if path == "" {
		return "", errors.New("secret file: no path")
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	if err := checkMode(f, path); err != nil {
		return "", err
	}
	b, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return "", fmt.Errorf("secret file %s: %w", path, err)
	}
	if len(b) > MaxSize {
		return "", fmt.Errorf("secret file %s: larger than %d bytes", path, MaxSize)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("secret file %s is empty", path)
	}
	return s, nil
}

// Check reports whether path is acceptable as a secret file without reading it.
func Check(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("secret file: %w", err)
	}
	defer f.Close()
	return checkMode(f, path)
}

func checkMode(f *os.File, path string) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("secret file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("secret file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("secret file %s has mode %04o: its group or others may read it; chmod 600 %s", path, perm, path)
	}
	return nil
}

// Write writes a secret to path with mode 0600, replacing the file whole (a crash leaves
// the old secret or the new one, never half of one).
func Write(path, secret string) error {
	return atomicfile.WriteFile(path, []byte(secret+"\n"), 0o600)
}
