// Package entropy carries randomness across boots: a seed file on /perm is mixed into
// the kernel's pool (and credited, as systemd's random-seed does, since it was made by a
// fully seeded kernel), then replaced at once so no seed is ever used twice; shutdown
// writes a fresh one. It also reports whether the kernel's RNG is ready, which TLS keys
// and the broker's connect tags depend on.
package entropy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SeedSize is the seed file's size (the kernel's pool is 256 bits; more does no harm).
const SeedSize = 512

// Restore mixes the seed at path into the kernel's pool, crediting it, then writes a new
// seed. It returns whether a seed was there.
func Restore(path string) (bool, error) {
	seed, err := os.ReadFile(path)
	found := err == nil && len(seed) >= 32
	if found {
		if err := credit(seed); err != nil {
			// Without CAP_SYS_ADMIN or on odd kernels: at least mix it in.
			if f, err2 := os.OpenFile("/dev/urandom", os.O_WRONLY, 0); err2 == nil {
				_, _ = f.Write(seed)
				f.Close()
			}
		}
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	// Replace it now: a crash before shutdown must not reuse this one.
	return found, Save(path)
}

// credit adds buf to the pool with RNDADDENTROPY, credited at 8 bits a byte up to 256.
func credit(buf []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	n := len(buf)
	// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
	info := make([]byte, 8+n+3)
	bits := n * 8
	if bits > 256 {
		bits = 256
	}
	*(*int32)(unsafe.Pointer(&info[0])) = int32(bits)
	*(*int32)(unsafe.Pointer(&info[4])) = int32(n)
	copy(info[8:], buf)
	_, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&info[0])))
	if e != 0 {
		return e
	}
	return nil
}

// Save writes a new seed from the kernel's RNG to path (atomically).
func Save(path string) error {
	seed := make([]byte, SeedSize)
	if _, err := unix.Getrandom(seed, unix.GRND_NONBLOCK); err != nil {
		return fmt.Errorf("random seed: the kernel's RNG is not ready: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, seed, 0o600); err != nil {
		return err
	}
	if f, err := os.Open(tmp); err == nil {
		_ = f.Sync()
		f.Close()
	}
	return os.Rename(tmp, path)
}

// Ready reports whether getrandom would not block.
func Ready() bool {
	var b [1]byte
	_, err := unix.Getrandom(b[:], unix.GRND_NONBLOCK)
	return err == nil
}

// WaitReady waits up to d for the RNG to be ready.
func WaitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for {
		if Ready() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
