package memscrub

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// HoldFile opens a file of guest memory — a saved-state image (libvirt's managed save) —
// so that it can be zeroed in place even after someone else unlinks it: libvirt deletes a
// managed save image once it has restored from it, and the blocks must not be freed with
// the guest's RAM still in them. Zero overwrites every data block, Close syncs the zeroes to
// the device before freeing the blocks, and refuses unless Zero succeeded.
func HoldFile(path string) (*Held, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("hold saved guest memory: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("hold saved guest memory: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("hold saved guest memory: %s is not a regular file", path)
	}
	return &Held{f: f, size: st.Size(), file: true}, nil
}

// Path is the held file's name when it was opened.
func (h *Held) Path() string { return h.f.Name() }

// syncFile writes a held file's zeroes through to its device before its blocks are freed.
func (h *Held) syncFile() error {
	if !h.file {
		return nil
	}
	if err := unix.Fdatasync(int(h.f.Fd())); err != nil {
		return fmt.Errorf("sync zeroed %s: %w", h.f.Name(), err)
	}
	return nil
}
