package memscrub

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// Report is what the host's memory hygiene looks like.
type Report struct {
	Swap        []string // active swap areas; guest pages could be written to disk
	KSMRunning  bool     // the kernel merges identical pages (a cross-guest side channel)
	KSMShared   string   // pages_shared, for the operator
	InitOnFree  bool     // the kernel zeroes every page it frees (init_on_free=1)
	InitOnAlloc bool
}

// Paths read by Check; tests point them elsewhere.
var (
	procSwaps   = "/proc/swaps"
	ksmRun      = "/sys/kernel/mm/ksm/run"
	ksmShared   = "/sys/kernel/mm/ksm/pages_shared"
	procCmdline = "/proc/cmdline"
	procConfig  = "/proc/config.gz"
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
	return fmt.Sprintf("swap=%s ksm=%s init_on_free=%s init_on_alloc=%s", swap, onoff(r.KSMRunning), onoff(r.InitOnFree), onoff(r.InitOnAlloc))
}
