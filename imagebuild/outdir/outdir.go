// Package outdir gives a build an output directory that only ever appears complete: the
// build writes into a temporary directory next to the destination, and Commit swaps it
// in (renameat2 RENAME_EXCHANGE when a previous build is there). A build that fails or is
// interrupted leaves the previous output, or nothing, never a half-written one.
package outdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Dir is an output directory being built.
type Dir struct {
	// Tmp is where to write the files.
	Tmp string
	out string
}

// Begin prepares to build out. marker is the file every complete output holds (its
// manifest): an existing out without it, and not empty, is refused rather than
// replaced, since it is not a previous build.
func Begin(out, marker string) (*Dir, error) {
	if out == "" {
		return nil, errors.New("no output directory")
	}
	abs, err := filepath.Abs(out)
	if err != nil {
		return nil, err
	}
	if err := replaceable(abs, marker); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, fmt.Errorf("output directory %s: %w", filepath.Dir(abs), err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(abs), "."+filepath.Base(abs)+".building-")
	if err != nil {
		return nil, fmt.Errorf("output directory %s is not writable: %w", filepath.Dir(abs), err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		os.RemoveAll(tmp)
		return nil, err
	}
	return &Dir{Tmp: tmp, out: abs}, nil
}

// Out is the final directory.
func (d *Dir) Out() string { return d.out }

// Path is a file in the temporary directory.
func (d *Dir) Path(elem ...string) string { return filepath.Join(append([]string{d.Tmp}, elem...)...) }

// Abort removes the temporary directory (after Commit: the previous output). Safe to
// call more than once; defer it.
func (d *Dir) Abort() { _ = os.RemoveAll(d.Tmp) }

// Commit syncs every file and swaps the directory in.
func (d *Dir) Commit() error {
	if err := filepath.WalkDir(d.Tmp, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() || e.IsDir() {
			return syncPath(p)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("syncing the output: %w", err)
	}
	if _, err := os.Lstat(d.out); err == nil {
		if err := unix.Renameat2(unix.AT_FDCWD, d.Tmp, unix.AT_FDCWD, d.out, unix.RENAME_EXCHANGE); err != nil {
			// Without RENAME_EXCHANGE: move the old one aside first.
			old := d.Tmp + ".old"
			if err := os.Rename(d.out, old); err != nil {
				return fmt.Errorf("replacing %s: %w", d.out, err)
			}
			if err := os.Rename(d.Tmp, d.out); err != nil {
				return fmt.Errorf("replacing %s: %w", d.out, err)
			}
			_ = os.RemoveAll(old)
		}
		// d.Tmp now holds the previous output; Abort removes it.
	} else if err := os.Rename(d.Tmp, d.out); err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return syncPath(filepath.Dir(d.out))
}

func replaceable(out, marker string) error {
	st, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	if !st.IsDir() {
		return fmt.Errorf("output %s exists and is not a directory", out)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		return fmt.Errorf("output directory: %w", err)
	}
	if len(ents) == 0 {
		return nil
	}
	if _, err := os.Stat(filepath.Join(out, marker)); err != nil {
		return fmt.Errorf("output directory %s is not empty and holds no %s: not replacing it", out, marker)
	}
	return nil
}

func syncPath(p string) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
