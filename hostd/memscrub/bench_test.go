package memscrub

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/internal/testenv"
)

// BenchmarkScrub measures the teardown scrub (zero every populated page, read each back)
// of fully populated guest RAM, on 4 KiB pages (shmem memfd) and on 2 MiB pages (hugetlb
// memfd), against two baselines measured in the same run on the same kind of RAM:
//
//	(a) pwrite of zeros in 1 MiB chunks over a populated 4 KiB-page memfd of the same
//	    size: the zeroing limit of a memfd (hugetlbfs has no write(2), so for 2 MiB pages
//	    (a) is still measured on a 4 KiB-page memfd: the limit of RAM without huge pages);
//	(b) memset of the same RAM already mapped into the benchmark: the memory-speed
//	    ceiling, paying no page-table work at all.
//
// The baselines use as many workers as the scrub does. It reports scrub ÷ (a) (goal
// ≥ 0.5), scrub ÷ (b), the absolute GiB/s of all three, and the teardown time of the
// guest's RAM: a scrub plus the punch that hands the pages back (goal for 4 GiB: < 1 s).
// Sizes: MEMSCRUB_BENCH_GIB (default "1,4"). The 2 MiB runs need root (they grow the huge
// page pool, and give back what they added).
func BenchmarkScrub(b *testing.B) {
	sizes := os.Getenv("MEMSCRUB_BENCH_GIB")
	if sizes == "" {
		sizes = "1,4"
	}
	for _, s := range strings.Split(sizes, ",") {
		gib, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || gib < 1 {
			b.Fatalf("MEMSCRUB_BENCH_GIB: %q is not a whole number of GiB", s)
		}
		for _, huge := range []bool{false, true} {
			name := fmt.Sprintf("4KiB/%dGiB", gib)
			if huge {
				name = fmt.Sprintf("2MiB/%dGiB", gib)
			}
			b.Run(name, func(b *testing.B) { benchScrub(b, int64(gib)<<30, huge) })
		}
	}
}

// ram is a populated memfd mapped into the benchmark, standing in for a guest's RAM.
type ram struct {
	f    *os.File
	m    []byte
	size int64
}

func newRAM(b *testing.B, size int64, huge bool) *ram {
	flags := 0
	if huge {
		flags = unix.MFD_HUGETLB
	}
	fd, err := unix.MemfdCreate("bench", flags)
	if err != nil {
		b.Fatal(err)
	}
	r := &ram{f: os.NewFile(uintptr(fd), "bench"), size: size}
	b.Cleanup(func() { r.f.Close() })
	if err := unix.Ftruncate(fd, size); err != nil {
		b.Fatal(err)
	}
	if r.m, err = unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Munmap(r.m) })
	r.dirty() // first touch allocates the pages: slow, and not what is measured
	return r
}

// dirty writes a byte into every 4 KiB of the RAM, as a guest that used all of it.
func (r *ram) dirty() {
	for i := 0; i < len(r.m); i += 4096 {
		r.m[i] = 0xA5
	}
}

// across runs fn over [0, size) in pieces of piece bytes on w workers.
func across(size, piece int64, w int, fn func(off, n int64)) time.Duration {
	t0 := time.Now()
	var wg sync.WaitGroup
	per := (size/int64(w) + piece - 1) / piece * piece
	for i := range w {
		wg.Add(1)
		go func(start int64) {
			defer wg.Done()
			for off := start; off < min(start+per, size); off += piece {
				fn(off, min(piece, size-off))
			}
		}(int64(i) * per)
	}
	wg.Wait()
	return time.Since(t0)
}

func benchScrub(b *testing.B, size int64, huge bool) {
	var added int64
	var scrubbed *ram
	if huge {
		testenv.Root(b)
		// Registered first, so it runs after the RAM is unmapped and closed.
		b.Cleanup(func() {
			if err := ShrinkHugePages(added); err != nil {
				b.Errorf("give back %d huge pages: %v", added, err)
			}
		})
		var err error
		added, err = WithHugePages(size, func() error { scrubbed = newRAM(b, size, true); return nil })
		if err != nil {
			b.Skipf("no room for %d GiB of huge pages: %v", size>>30, err)
		}
	}
	limit := newRAM(b, size, false) // (a)'s 4 KiB-page memfd
	if !huge {
		scrubbed = limit
	}
	h := &Held{f: scrubbed.f, size: size, pid: -1, huge: huge}
	w := min(runtime.GOMAXPROCS(0), maxWorkers)
	zero1M := make([]byte, 1<<20)
	var scrub, pwrite, memset time.Duration
	methods := []func(){
		func() {
			limit.dirty()
			pwrite += across(size, 1<<20, w, func(off, n int64) {
				if err := pwriteFull(int(limit.f.Fd()), zero1M[:n], off); err != nil {
					b.Error(err)
				}
			})
		},
		func() {
			scrubbed.dirty()
			memset += across(size, 1<<20, w, func(off, n int64) { clear(scrubbed.m[off : off+n]) })
		},
		func() {
			scrubbed.dirty()
			st, err := h.Zero()
			if err != nil {
				b.Fatal(err)
			}
			if st.Populated != size {
				b.Fatalf("scrubbed %d of %d populated bytes", st.Populated, size)
			}
			scrub += st.Duration
		},
	}
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for j := range methods { // rotated, so that no method always runs first or last
			methods[(i+j)%len(methods)]()
		}
	}
	b.StopTimer()
	// The teardown's last step: hand the zeroed pages back.
	t0 := time.Now()
	if err := h.Close(); err != nil {
		b.Fatal(err)
	}
	punch := time.Since(t0)
	gibps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / (1 << 30) }
	b.ReportMetric(gibps(scrub), "scrub-GiB/s")
	b.ReportMetric(gibps(pwrite), "a-pwrite-GiB/s")
	b.ReportMetric(gibps(memset), "b-memset-GiB/s")
	b.ReportMetric(pwrite.Seconds()/scrub.Seconds(), "scrub/a")
	b.ReportMetric(memset.Seconds()/scrub.Seconds(), "scrub/b")
	b.ReportMetric((scrub.Seconds()/float64(b.N)+punch.Seconds())*1000, "teardown-ms")
	b.ReportMetric(punch.Seconds()*1000, "punch-ms")
	b.ReportMetric(float64(w), "workers")
}
