// Package memscrub keeps the guide's promise that "the memory allocated to [a WorkSpace] is
// scrubbed (set to zero) by the hypervisor before it is allocated to a new WorkSpace".
//
// Guest RAM is a shared memfd (see hostd/virt). While the guest runs, hostd opens that memfd
// through /proc/<qemu pid>/fd and holds it. When qemu is gone — destroyed, shut down or
// crashed — the pages still belong to the held file and to nobody else: hostd zeroes every
// populated page, reads each one back to check it is zero, punches the file empty, and only
// then closes it and lets the kernel reuse the pages.
//
// How the pages are zeroed depends on their size, because what is slow differs:
//   - 4 KiB pages (a shmem memfd): with pwrite of zeros and pread back, chunk by chunk, so
//     no page is ever mapped. Mapping 4 KiB pages into hostd costs a page-table entry and a
//     TLB shootdown per page, which made the mapped scrub run at a tenth of pwrite's speed.
//   - 2 MiB pages (a hugetlbfs memfd): through a mapping, a window at a time. hugetlbfs has
//     no write(2), and a 2 MiB page costs one page-table entry, so the mapping is cheap and
//     the zeroing runs at memset speed.
//
// In both, each chunk is read back right after it is zeroed, while it is still in the CPU
// cache, so the check costs little beyond the writes.
package memscrub

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
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
	huge      bool   // hugetlbfs: 2 MiB pages, zeroed through a mapping
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
		if st.Size() != ramBytes {
			sizes = append(sizes, st.Size())
			f.Close()
			continue
		}
		var fs unix.Statfs_t
		if err := unix.Fstatfs(int(f.Fd()), &fs); err != nil {
			f.Close()
			return nil, fmt.Errorf("statfs guest RAM %s: %w", p, err)
		}
		return &Held{f: f, size: ramBytes, pid: pid, startTime: start, huge: fs.Type == unix.HUGETLBFS_MAGIC}, nil
	}
	return nil, fmt.Errorf("qemu %d has no memfd of %d bytes to hold as guest RAM (memfds seen: %v); is the domain memfd-backed?", pid, ramBytes, sizes)
}

// Size is the guest RAM size in bytes.
func (h *Held) Size() int64 { return h.size }

// PID is the qemu process the RAM came from.
func (h *Held) PID() int { return h.pid }

// HugePages reports whether the RAM is on 2 MiB hugetlb pages.
func (h *Held) HugePages() bool { return h.huge }

// Stats describe one scrub.
type Stats struct {
	// Populated is the bytes zeroed and verified: every page the guest had touched. A
	// hugetlb file is scrubbed whole (hugetlbfs cannot tell its holes, and qemu preallocates
	// hugepage RAM anyway).
	Populated int64
	Duration  time.Duration
}

// ErrRunning means the guest's qemu still runs: zeroing its RAM now would corrupt it, and
// it could write the pages again afterwards.
var ErrRunning = errors.New("qemu is still running")

const (
	// chunk is the unit of zero-then-verify: with its zero twin and the read-back buffer
	// it stays in a core's L2 cache, and it is large enough that the two system calls per
	// chunk cost little (about 3 µs each on these machines).
	chunk = 256 << 10
	// unit is what one worker takes at a time. For hugetlb RAM it is also the mapping
	// window: one mmap, one populate call and one unmap per 64 MiB.
	unit = 64 << 20
	// maxWorkers bounds the cores a scrub borrows: beyond a few, memory bandwidth, not
	// cores, limits it.
	maxWorkers = 8
)

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
	if h.Running() {
		return Stats{}, fmt.Errorf("scrub guest RAM of qemu %d: %w", h.pid, ErrRunning)
	}
	spans, err := h.populated()
	if err != nil {
		return Stats{}, fmt.Errorf("scrub guest RAM of qemu %d: %w", h.pid, err)
	}
	var done atomic.Int64
	err = parallel(spans, func(sp span, buf []byte) error {
		var err error
		if h.huge {
			err = h.zeroMapped(sp)
		} else {
			err = h.zeroFile(sp, buf)
		}
		if err == nil {
			done.Add(sp.n)
		}
		return err
	})
	st := Stats{Populated: done.Load(), Duration: time.Since(t0)}
	if err != nil {
		return st, fmt.Errorf("scrub guest RAM of qemu %d: %w", h.pid, err)
	}
	h.zeroed = true
	return st, nil
}

// zeroFile zeroes sp with pwrite and reads each chunk back with pread.
func (h *Held) zeroFile(sp span, buf []byte) error {
	fd := int(h.f.Fd())
	for off := sp.off; off < sp.off+sp.n; off += chunk {
		n := min(chunk, sp.off+sp.n-off)
		if err := pwriteFull(fd, zeros[:n], off); err != nil {
			return fmt.Errorf("zero %d bytes at %d: %w", n, off, err)
		}
		if err := preadFull(fd, buf[:n], off); err != nil {
			return fmt.Errorf("read back %d bytes at %d: %w", n, off, err)
		}
		if !bytes.Equal(buf[:n], zeros[:n]) {
			return fmt.Errorf("%d bytes at %d read back non-zero just after being zeroed", n, off)
		}
	}
	return nil
}

// zeroMapped zeroes sp through a mapping of it and reads each chunk back. The pages are
// faulted in by MADV_POPULATE_WRITE, which reports a failure as an error; a fault that
// still happens (the file changed under us) becomes an error too, not a crash of hostd.
func (h *Held) zeroMapped(sp span) (err error) {
	b, err := unix.Mmap(int(h.f.Fd()), sp.off, int(sp.n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fmt.Errorf("map %d bytes at %d: %w", sp.n, sp.off, err)
	}
	defer func() {
		if uerr := unix.Munmap(b); uerr != nil && err == nil {
			err = fmt.Errorf("unmap %d bytes at %d: %w", sp.n, sp.off, uerr)
		}
	}()
	if err := unix.Madvise(b, unix.MADV_POPULATE_WRITE); err != nil {
		return fmt.Errorf("populate %d bytes at %d: %w", sp.n, sp.off, err)
	}
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("fault while zeroing %d bytes at %d: %v", sp.n, sp.off, r)
		}
	}()
	for off := 0; off < len(b); off += chunk {
		c := b[off:min(off+chunk, len(b))]
		clear(c)
		if !bytes.Equal(c, zeros[:len(c)]) {
			return fmt.Errorf("%d bytes at %d read back non-zero just after being zeroed", len(c), sp.off+int64(off))
		}
	}
	return nil
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

// Count returns how many times marker occurs in the held RAM. It is how tests prove a
// guest's data was there before a scrub and is gone after it. It reads with pread, which
// never allocates a page (a hole reads as zeros), so counting changes nothing.
func (h *Held) Count(marker []byte) (int64, error) {
	if len(marker) == 0 || len(marker) > chunk {
		return 0, fmt.Errorf("count: marker of %d bytes", len(marker))
	}
	spans, err := h.populated()
	if err != nil {
		return 0, err
	}
	var n atomic.Int64
	err = parallel(spans, func(sp span, buf []byte) error {
		// Each read overlaps the previous by len(marker)-1 bytes, so an occurrence across
		// a read boundary is counted once; occurrences across units are not counted.
		step := int64(len(buf) - len(marker) + 1)
		for off := sp.off; off < sp.off+sp.n; off += step {
			m := min(int64(len(buf)), sp.off+sp.n-off)
			if err := preadFull(int(h.f.Fd()), buf[:m], off); err != nil {
				return fmt.Errorf("read %d bytes at %d: %w", m, off, err)
			}
			n.Add(int64(bytes.Count(buf[:m], marker)))
			if off+m == sp.off+sp.n {
				break
			}
		}
		return nil
	})
	return n.Load(), err
}

// NonZero returns the offset of the first non-zero byte of the held RAM, or -1 if every
// byte reads zero (tests use it to check a scrub byte by byte, not only for markers).
func (h *Held) NonZero() (int64, error) {
	buf := make([]byte, chunk)
	for off := int64(0); off < h.size; off += chunk {
		n := min(chunk, h.size-off)
		if err := preadFull(int(h.f.Fd()), buf[:n], off); err != nil {
			return 0, err
		}
		if bytes.Equal(buf[:n], zeros[:n]) {
			continue
		}
		for i, c := range buf[:n] {
			if c != 0 {
				return off + int64(i), nil
			}
		}
	}
	return -1, nil
}

// Release closes the file without scrubbing. Only for tests that prove a missing scrub is
// caught, and for giving up on a guest that is still running; hostd never calls it on a
// guest that is gone.
func (h *Held) Release() error { return h.f.Close() }

type span struct{ off, n int64 }

// populated lists the ranges to scrub, cut into units. For a shmem file they are its
// populated ranges (SEEK_DATA/SEEK_HOLE: pages the guest never touched are holes and cost
// nothing); hugetlbfs has no SEEK_DATA, so a hugetlb file is one range.
func (h *Held) populated() ([]span, error) {
	var ranges []span
	if h.huge {
		ranges = []span{{0, h.size}}
	} else {
		fd := int(h.f.Fd())
		for off := int64(0); off < h.size; {
			data, err := unix.Seek(fd, off, unix.SEEK_DATA)
			if errors.Is(err, unix.ENXIO) {
				break // no data after off
			}
			if err != nil {
				return nil, fmt.Errorf("seek data: %w", err)
			}
			hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
			if err != nil {
				return nil, fmt.Errorf("seek hole: %w", err)
			}
			ranges = append(ranges, span{data, hole - data})
			off = hole
		}
	}
	var spans []span
	for _, r := range ranges {
		for off := r.off; off < r.off+r.n; off += unit {
			spans = append(spans, span{off, min(unit, r.off+r.n-off)})
		}
	}
	return spans, nil
}

// parallel runs fn on every span, on up to maxWorkers workers (each with its own chunk
// buffer), and returns the first error. After an error the remaining spans are skipped.
func parallel(spans []span, fn func(sp span, buf []byte) error) error {
	work := make(chan span)
	var (
		wg     sync.WaitGroup
		once   sync.Once
		first  error
		failed atomic.Bool
	)
	for range min(runtime.GOMAXPROCS(0), maxWorkers, len(spans)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			for sp := range work {
				if failed.Load() {
					continue
				}
				if err := fn(sp, buf); err != nil {
					once.Do(func() { first = err })
					failed.Store(true)
				}
			}
		}()
	}
	for _, sp := range spans {
		work <- sp
	}
	close(work)
	wg.Wait()
	return first
}

func pwriteFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(fd, b, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrShortWrite
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func preadFull(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pread(fd, b, off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

// Running reports whether the qemu process the RAM came from still runs.
func (h *Held) Running() bool {
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
