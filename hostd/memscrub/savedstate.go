package memscrub

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// RemoveSavedState zeroes a saved guest state (a hibernated guest's RAM on disk) in place,
// flushes the zeros to the disk, and removes the file: no later WorkSpace, and nobody who
// reads the freed blocks, finds the guest's memory in it. Overwriting in place reaches the
// file's own blocks on ext4 and the other filesystems hostd's data directory lives on (no
// copy-on-write). A missing file is not an error; it returns the bytes zeroed.
func RemoveSavedState(path string) (int64, error) {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("scrub saved state: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, fmt.Errorf("scrub saved state %s: %w", path, err)
	}
	zeros := make([]byte, 1<<20)
	var done int64
	for done < st.Size() {
		n := min(int64(len(zeros)), st.Size()-done)
		if err := pwriteFull(int(f.Fd()), zeros[:n], done); err != nil {
			return done, fmt.Errorf("scrub saved state %s at %d: %w", path, done, err)
		}
		done += n
	}
	if err := f.Sync(); err != nil {
		return done, fmt.Errorf("scrub saved state %s: flush: %w", path, err)
	}
	if err := os.Remove(path); err != nil {
		return done, fmt.Errorf("scrub saved state %s: %w", path, err)
	}
	return done, nil
}
