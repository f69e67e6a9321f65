// Package memscrub keeps the guide's promise that "the memory allocated to [a WorkSpace] is
// scrubbed (set to zero) by the hypervisor before it is allocated to a new WorkSpace".
//
// Guest RAM is a shared memfd (see hostd/virt). While the guest runs, hostd opens that memfd
// through /proc/<qemu pid>/fd and holds it. When qemu is gone — destroyed, shut down or
// crashed — the pages still belong to the held file and to nobody else: hostd zeroes every
// populated page, reads each one back to check it is zero, punches the file empty, and only
// then closes it and lets the kernel reuse the pages.
package memscrub

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Held is a guest's RAM, held open so that it outlives its qemu process.
type Held struct {
	f         *os.File
	size      int64
	pid       int
	startTime string // the qemu process's start time, to tell it from a reused pid
	zeroed    bool
}

// Hold finds the memfd of size ramBytes that qemu process pid uses as guest RAM and opens
// it. It fails if there is none: a guest whose RAM cannot be scrubbed must not run.
func Hold(pid int, ramBytes int64) (*Held, error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("hold guest RAM of qemu %d: %w", pid, err)
	}
	start, err := processStart(pid)
	if err != nil {
		return nil, fmt.Errorf("hold guest RAM of qemu %d: %w", pid, err)
	}
	var sizes []int64
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		target, err := os.Readlink(p)
		if err != nil || !strings.HasPrefix(target, "/memfd:") {
			continue
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			return nil, fmt.Errorf("open guest RAM %s: %w", p, err)
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat guest RAM %s: %w", p, err)
		}
		if st.Size() == ramBytes {
			return &Held{f: f, size: ramBytes, pid: pid, startTime: start}, nil
		}
		sizes = append(sizes, st.Size())
		f.Close()
	}
	return nil, fmt.Errorf("qemu %d has no memfd of %d bytes to hold as guest RAM (memfds seen: %v); is the domain memfd-backed?", pid, ramBytes, sizes)
}

// Size is the guest RAM size in bytes.
func (h *Held) Size() int64 { return h.size }

// PID is the qemu process the RAM came from.
func (h *Held) PID() int { return h.pid }

// Stats describe one scrub.
type Stats struct {
	Populated int64 // bytes the guest had touched, all zeroed and verified
	Duration  time.Duration
}

// ErrRunning means the guest's qemu still runs: zeroing its RAM now would corrupt it, and
// it could write the pages again afterwards.
var ErrRunning = errors.New("qemu is still running")

// chunk is the unit of zero-then-verify: small enough (with its zero twin) to still be in
// L1 when read back, so the check costs almost nothing beyond the writes.
const chunk = 16 << 10

var zeros = make([]byte, chunk)

// Scrub zeroes every populated page of the held RAM, checks that each reads back zero,
// then releases the pages and closes the file. It refuses while qemu runs. On error the
// file stays held (pages are never released unverified) and Scrub may be retried.
func (h *Held) Scrub() (Stats, error) {
	st, err := h.Zero()
	if err != nil {
		return st, err
	}
	return st, h.Close()
}

// Zero zeroes every populated page and checks that it reads back zero. It refuses while
// qemu runs.
func (h *Held) Zero() (Stats, error) {
	t0 := time.Now()
	if h.alive() {
		return Stats{}, fmt.Errorf("scrub guest RAM of qemu %d: %w", h.pid, ErrRunning)
	}
	var populated atomic.Int64
	err := h.eachPopulated(func(b []byte) error {
		for off := 0; off < len(b); off += chunk {
			c := b[off:min(off+chunk, len(b))]
			clear(c)
			if !bytes.Equal(c, zeros[:len(c)]) {
				return fmt.Errorf("guest RAM of qemu %d reads back non-zero at a page just zeroed", h.pid)
			}
		}
		populated.Add(int64(len(b)))
		return nil
	})
	st := Stats{Populated: populated.Load(), Duration: time.Since(t0)}
	if err != nil {
		return st, fmt.Errorf("scrub guest RAM of qemu %d: %w", h.pid, err)
	}
	h.zeroed = true
	return st, nil
}

// Close hands the zeroed pages back to the kernel and closes the file. It refuses if Zero
// has not succeeded.
func (h *Held) Close() error {
	if !h.zeroed {
		return fmt.Errorf("release guest RAM of qemu %d: not scrubbed", h.pid)
	}
	if err := unix.Fallocate(int(h.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, h.size); err != nil {
		return fmt.Errorf("release scrubbed guest RAM of qemu %d: %w", h.pid, err)
	}
	return h.f.Close()
}

// Count returns how many times marker occurs in the held RAM (occurrences crossing a
// mapping window are not counted). It is how tests prove a guest's data was there before a
// scrub and is gone after it.
func (h *Held) Count(marker []byte) (int64, error) {
	var n atomic.Int64
	err := h.eachPopulated(func(b []byte) error {
		n.Add(int64(bytes.Count(b, marker)))
		return nil
	})
	return n.Load(), err
}

// Release closes the file without scrubbing. Only for tests that prove a missing scrub is
// caught, and for giving up on a guest that is still running; hostd never calls it on a
// guest that is gone.
func (h *Held) Release() error { return h.f.Close() }

// window bounds how much of the RAM one worker maps at once.
const window = 32 << 20

// eachPopulated maps each populated range of the file (SEEK_DATA/SEEK_HOLE: pages the guest
// never touched are holes and cost nothing) and calls fn on it, a window at a time, on up to
// GOMAXPROCS workers: mapping 4 KiB pages is page-table work that parallelises, and a
// teardown is rare enough to borrow every core for a few milliseconds. fn must be safe for
// concurrent use.
func (h *Held) eachPopulated(fn func([]byte) error) error {
	fd := int(h.f.Fd())
	type span struct{ off, n int64 }
	var spans []span
	for off := int64(0); off < h.size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // no data after off
		}
		if err != nil {
			return fmt.Errorf("seek data: %w", err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("seek hole: %w", err)
		}
		for w := data; w < hole; w += window {
			spans = append(spans, span{w, min(window, hole-w)})
		}
		off = hole
	}
	work := make(chan span)
	errs := make(chan error, len(spans)+1)
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(spans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for sp := range work {
				b, err := unix.Mmap(fd, sp.off, int(sp.n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
				if err != nil {
					errs <- fmt.Errorf("map %d bytes at %d: %w", sp.n, sp.off, err)
					continue
				}
				if err := fn(b); err != nil {
					errs <- err
				}
				if err := unix.Munmap(b); err != nil {
					errs <- err
				}
			}
		}()
	}
	for _, sp := range spans {
		work <- sp
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs // nil if none
}

func (h *Held) alive() bool {
	start, err := processStart(h.pid)
	if err != nil || start != h.startTime {
		return false
	}
	st, err := processState(h.pid)
	return err == nil && st != "Z" && st != "X"
}

// processStart is field 22 of /proc/pid/stat: the start time in clock ticks.
func processStart(pid int) (string, error) {
	f, err := statFields(pid)
	if err != nil {
		return "", err
	}
	if len(f) < 20 {
		return "", fmt.Errorf("short /proc/%d/stat", pid)
	}
	return f[19], nil
}

func processState(pid int) (string, error) {
	f, err := statFields(pid)
	if err != nil {
		return "", err
	}
	return f[0], nil
}

// statFields returns /proc/pid/stat's fields after the command name (field 3 onwards).
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return nil, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(s[i+1:]), nil
}
