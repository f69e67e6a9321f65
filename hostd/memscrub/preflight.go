package memscrub

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Report is what the host's memory hygiene looks like.
type Report struct {
	Swap        []string // active swap areas; guest pages could be written to disk
	KSMRunning  bool     // the kernel merges identical pages (a cross-guest side channel)
	KSMShared   string   // pages_shared, for the operator
	InitOnFree  bool     // the kernel zeroes every page it frees (init_on_free=1)
	InitOnAlloc bool
	HugePages   HugePages // the 2 MiB page pool guest RAM comes from
}

// Paths read by Check; tests point them elsewhere.
var (
	procSwaps   = "/proc/swaps"
	ksmRun      = "/sys/kernel/mm/ksm/run"
	ksmShared   = "/sys/kernel/mm/ksm/pages_shared"
	procCmdline = "/proc/cmdline"
	procConfig  = "/proc/config.gz"
	procMeminfo = "/proc/meminfo"
	nrHugePages = "/proc/sys/vm/nr_hugepages"
)

// Check reads the host's swap, KSM and init_on_free state.
func Check() (Report, error) {
	var r Report
	f, err := os.Open(procSwaps)
	if err != nil {
		return r, fmt.Errorf("memory preflight: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if !first && strings.TrimSpace(sc.Text()) != "" {
			r.Swap = append(r.Swap, strings.Fields(sc.Text())[0])
		}
	}
	if b, err := os.ReadFile(ksmRun); err == nil {
		r.KSMRunning = strings.TrimSpace(string(b)) == "1"
	} else if !errors.Is(err, os.ErrNotExist) {
		return r, fmt.Errorf("memory preflight: %w", err)
	}
	if b, err := os.ReadFile(ksmShared); err == nil {
		r.KSMShared = strings.TrimSpace(string(b))
	}
	cmdline, err := os.ReadFile(procCmdline)
	if err != nil {
		return r, fmt.Errorf("memory preflight: %w", err)
	}
	r.InitOnFree = kernelFlag(string(cmdline), "init_on_free", configDefault("CONFIG_INIT_ON_FREE_DEFAULT_ON"))
	r.InitOnAlloc = kernelFlag(string(cmdline), "init_on_alloc", configDefault("CONFIG_INIT_ON_ALLOC_DEFAULT_ON"))
	if r.HugePages, err = readHugePages(); err != nil {
		return r, fmt.Errorf("memory preflight: %w", err)
	}
	return r, nil
}

// kernelFlag reads a boolean kernel parameter; the last occurrence wins, as in the kernel.
func kernelFlag(cmdline, name string, def bool) bool {
	v := def
	for _, f := range strings.Fields(cmdline) {
		if k, val, ok := strings.Cut(f, "="); ok && k == name {
			switch val {
			case "1", "on", "y", "Y", "yes":
				v = true
			case "0", "off", "n", "N", "no":
				v = false
			}
		}
	}
	return v
}

func configDefault(option string) bool {
	f, err := os.Open(procConfig)
	if err != nil {
		return false
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return false
	}
	b, err := io.ReadAll(z)
	return err == nil && bytes.Contains(b, []byte("\n"+option+"=y\n"))
}

// Refusal returns why WorkSpaces must not start on this host, or nil. Swap and KSM always
// refuse; init_on_free refuses only when required (the appliance requires it; a
// development machine may not be able to set it).
func (r Report) Refusal(requireInitOnFree bool) error {
	var errs []error
	if len(r.Swap) > 0 {
		errs = append(errs, fmt.Errorf("swap is on (%s): guest memory could be written to disk; run swapoff -a", strings.Join(r.Swap, ", ")))
	}
	if r.KSMRunning {
		errs = append(errs, fmt.Errorf("KSM is merging pages (pages_shared=%s): write 0 (or 2) to %s", r.KSMShared, ksmRun))
	}
	if requireInitOnFree && !r.InitOnFree {
		errs = append(errs, errors.New("the kernel does not run with init_on_free=1"))
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("memory preflight refuses to start WorkSpaces: %w", errors.Join(errs...))
}

// String is the one-line summary hostd logs and the console shows.
func (r Report) String() string {
	onoff := func(b bool) string {
		if b {
			return "on"
		}
		return "off"
	}
	swap := "off"
	if len(r.Swap) > 0 {
		swap = strings.Join(r.Swap, ",")
	}
	return fmt.Sprintf("swap=%s ksm=%s init_on_free=%s init_on_alloc=%s hugepages=%d/%d", swap, onoff(r.KSMRunning),
		onoff(r.InitOnFree), onoff(r.InitOnAlloc), r.HugePages.Free, r.HugePages.Total)
}

// HugePageSize is the page size of hugepage-backed guest RAM (libvirt's <hugepages> with
// the default size on x86-64).
const HugePageSize = 2 << 20

// HugePages is the kernel's pool of default-size huge pages (/proc/meminfo), in pages.
type HugePages struct {
	Total, Free, Reserved int64
	// PageSize is the pool's page size in bytes; 0 if the kernel has no hugetlb support.
	PageSize int64
}

// Available is how many pages a new guest can have: free and not promised to a mapping.
func (p HugePages) Available() int64 { return p.Free - p.Reserved }

func readHugePages() (HugePages, error) {
	f, err := os.Open(procMeminfo)
	if err != nil {
		return HugePages{}, err
	}
	defer f.Close()
	var p HugePages
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var n int64
		if _, err := fmt.Sscan(v, &n); err != nil {
			continue
		}
		switch k {
		case "HugePages_Total":
			p.Total = n
		case "HugePages_Free":
			p.Free = n
		case "HugePages_Rsvd":
			p.Reserved = n
		case "Hugepagesize":
			p.PageSize = n << 10 // kB
		}
	}
	return p, sc.Err()
}

// hugeMu serialises this process's reservations; the flock on nr_hugepages serialises
// them with other processes (tests run several hostds on one machine).
var hugeMu sync.Mutex

// WithHugePages makes room in the huge page pool for a guest with ramBytes of RAM, growing
// the pool by what is missing, and runs start while no other reservation can count the
// same free pages: start must start the guest, whose qemu preallocates its pages (libvirt
// asks it to for hugepage RAM) before the domain counts as started. It returns the pages
// it added to the pool. Growing can fall short when host memory is short or fragmented;
// the error says how far, and start is not run.
func WithHugePages(ramBytes int64, start func() error) (added int64, err error) {
	hugeMu.Lock()
	defer hugeMu.Unlock()
	f, err := os.OpenFile(nrHugePages, os.O_RDWR, 0)
	if err != nil {
		return 0, fmt.Errorf("huge pages: %w (does the kernel support hugetlb?)", err)
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return 0, fmt.Errorf("huge pages: lock %s: %w", nrHugePages, err)
	}
	p, err := readHugePages()
	if err != nil {
		return 0, fmt.Errorf("huge pages: %w", err)
	}
	if p.PageSize != HugePageSize {
		return 0, fmt.Errorf("huge pages: the kernel's default huge page is %d bytes, guest RAM needs %d", p.PageSize, HugePageSize)
	}
	need := (ramBytes + HugePageSize - 1) / HugePageSize
	if short := need - p.Available(); short > 0 {
		want := p.Total + short
		if _, err := f.WriteAt([]byte(strconv.FormatInt(want, 10)), 0); err != nil {
			return 0, fmt.Errorf("huge pages: grow the pool from %d to %d pages: %w", p.Total, want, err)
		}
		q, err := readHugePages()
		if err != nil {
			return 0, fmt.Errorf("huge pages: %w", err)
		}
		added = q.Total - p.Total
		if q.Available() < need {
			return added, fmt.Errorf("huge pages: a guest with %d MiB of RAM needs %d free 2 MiB pages; the pool grew from %d to %d pages, %d free: "+
				"host memory is short or fragmented (reserve them at boot with hugepages=N on the kernel command line)",
				ramBytes>>20, need, p.Total, q.Total, q.Available())
		}
	}
	return added, start()
}

// ShrinkHugePages gives up to n free pages of the pool back to the kernel (tests return
// what they reserved; hostd keeps its pool, since growing it later may fail).
func ShrinkHugePages(n int64) error {
	if n <= 0 {
		return nil
	}
	hugeMu.Lock()
	defer hugeMu.Unlock()
	f, err := os.OpenFile(nrHugePages, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		return err
	}
	p, err := readHugePages()
	if err != nil {
		return err
	}
	n = min(n, p.Available())
	_, err = f.WriteAt([]byte(strconv.FormatInt(p.Total-n, 10)), 0)
	return err
}
