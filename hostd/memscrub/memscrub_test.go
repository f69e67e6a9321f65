package memscrub

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"deskhost/internal/testenv"
)

const (
	testSize = 64 << 20
	filled   = 48 << 20 // the rest stays holes, as RAM a guest never touched
)

var marker = []byte("DESKHOST-SCRUB-MARKER-0123456789") // 32 bytes: divides the chunk

// TestMain doubles as the "guest": with MEMSCRUB_CHILD set it makes a memfd (on 2 MiB
// pages with MEMSCRUB_CHILD=huge), fills part of it with the marker, and waits to be
// killed, like a qemu holding guest RAM.
func TestMain(m *testing.M) {
	if kind := os.Getenv("MEMSCRUB_CHILD"); kind != "" {
		child(kind == "huge")
		return
	}
	os.Exit(m.Run())
}

func child(huge bool) {
	flags := 0
	if huge {
		flags = unix.MFD_HUGETLB
	}
	fd, err := unix.MemfdCreate("memory-backend-memfd", flags)
	if err != nil {
		panic(err)
	}
	if err := unix.Ftruncate(fd, testSize); err != nil {
		panic(err)
	}
	b, err := unix.Mmap(fd, 0, testSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		panic(err)
	}
	for off := 0; off+len(marker) <= filled; off += len(marker) {
		copy(b[off:], marker)
	}
	fmt.Println("ready")
	time.Sleep(time.Hour) // until killed; a bare select{} would be a deadlock exit
}

func startGuest(t *testing.T, huge bool) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	kind := "4k"
	if huge {
		kind = "huge"
	}
	cmd.Env = append(os.Environ(), "MEMSCRUB_CHILD="+kind)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := func() error { return cmd.Start() }
	if huge {
		testenv.Root(t) // the pool is grown through /proc/sys/vm/nr_hugepages
		added, err := WithHugePages(testSize, start)
		t.Cleanup(func() {
			if err := ShrinkHugePages(added); err != nil {
				t.Errorf("give back %d huge pages: %v", added, err)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	} else if err := start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		t.Fatalf("child: %q %v", line, err)
	}
	return cmd
}

// TestScrubZeroesHeldRAMAfterOwnerDies holds a child's memfd, kills the child, and scrubs:
// the marker is there before and gone after, every byte reads zero, and the steps that
// would release pages unscrubbed refuse. On 4 KiB pages (pwrite/pread) and on 2 MiB pages
// (through a mapping).
func TestScrubZeroesHeldRAMAfterOwnerDies(t *testing.T) {
	for _, huge := range []bool{false, true} {
		name := "4KiB"
		if huge {
			name = "2MiB"
		}
		t.Run(name, func(t *testing.T) {
			cmd := startGuest(t, huge)
			h, err := Hold(cmd.Process.Pid, testSize)
			if err != nil {
				t.Fatal(err)
			}
			if h.HugePages() != huge {
				t.Fatalf("HugePages() = %v for a memfd made with hugetlb %v", h.HugePages(), huge)
			}
			want := int64(filled / len(marker))
			if n, err := h.Count(marker); err != nil || n != want {
				t.Fatalf("before: %d markers (%v), want %d: the held fd does not see the guest's RAM", n, err, want)
			}
			if _, err := h.Zero(); !errors.Is(err, ErrRunning) {
				t.Fatalf("Zero while the owner runs: %v, want ErrRunning", err)
			}
			if err := h.Close(); err == nil {
				t.Fatal("Close before Zero released unscrubbed pages")
			}
			cmd.Process.Kill()
			cmd.Wait()
			// The owner is gone, yet its pages are still there, held by us: this is the
			// window the scrub closes.
			if n, _ := h.Count(marker); n != want {
				t.Fatalf("after the owner died: %d markers, want %d still held", n, want)
			}
			st, err := h.Zero()
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case huge && st.Populated != testSize:
				t.Errorf("scrubbed %d bytes of a %d-byte hugetlb file (it is scrubbed whole)", st.Populated, testSize)
			case !huge && (st.Populated < filled || st.Populated > filled+(2<<20)):
				t.Errorf("scrubbed %d bytes; the guest populated %d (holes must be skipped)", st.Populated, filled)
			}
			if n, _ := h.Count(marker); n != 0 {
				t.Fatalf("after Zero: %d markers remain", n)
			}
			// Every byte, not just markers.
			if off, err := h.NonZero(); err != nil || off >= 0 {
				t.Fatalf("after Zero: non-zero byte at %d (%v)", off, err)
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
			t.Logf("scrubbed %d MiB in %s", st.Populated>>20, st.Duration)
		})
	}
}

// TestCountAcrossReads: an occurrence that straddles two reads is counted once, and the
// count reads the held RAM without changing it.
func TestCountAcrossReads(t *testing.T) {
	cmd := startGuest(t, false)
	h, err := Hold(cmd.Process.Pid, testSize)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Release()
	fd := int(h.f.Fd())
	// A second marker kind, written across the first read's end (chunk - len(m) + 1 is
	// where the second read starts).
	m := []byte("STRADDLE-0123456789")
	at := int64(filled + chunk - 5)
	if _, err := unix.Pwrite(fd, m, at); err != nil {
		t.Fatal(err)
	}
	if n, err := h.Count(m); err != nil || n != 1 {
		t.Fatalf("straddling marker counted %d times (%v), want 1", n, err)
	}
}

func TestHoldRefusesWithoutMatchingMemfd(t *testing.T) {
	cmd := startGuest(t, false)
	if _, err := Hold(cmd.Process.Pid, testSize+4096); err == nil || !strings.Contains(err.Error(), "no memfd") {
		t.Fatalf("Hold with the wrong size: %v", err)
	}
	if _, err := Hold(os.Getpid(), testSize); err == nil {
		t.Fatal("Hold found guest RAM in a process with none")
	}
}

func TestPreflight(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := dir + "/" + name
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	defer func(a, b, c, d string) { procSwaps, ksmRun, ksmShared, procCmdline = a, b, c, d }(procSwaps, ksmRun, ksmShared, procCmdline)
	procSwaps = write("swaps", "Filename Type Size Used Priority\n/dev/vdb partition 1024 0 -2\n")
	ksmRun = write("run", "1\n")
	ksmShared = write("shared", "42\n")
	procCmdline = write("cmdline", "console=ttyS0 init_on_free=0 init_on_free=1\n")
	r, err := Check()
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Swap) != 1 || !r.KSMRunning || r.KSMShared != "42" || !r.InitOnFree || r.InitOnAlloc {
		t.Fatalf("report %+v", r)
	}
	err = r.Refusal(true)
	if err == nil || !strings.Contains(err.Error(), "swap is on (/dev/vdb)") || !strings.Contains(err.Error(), "KSM") {
		t.Fatalf("refusal: %v", err)
	}
	procSwaps = write("swaps", "Filename Type Size Used Priority\n")
	ksmRun = write("run", "0\n")
	procCmdline = write("cmdline", "quiet\n")
	if r, err = Check(); err != nil {
		t.Fatal(err)
	}
	if err := r.Refusal(false); err != nil {
		t.Fatalf("a clean host is refused: %v", err)
	}
	if err := r.Refusal(true); err == nil || !strings.Contains(err.Error(), "init_on_free") {
		t.Fatalf("init_on_free required but off: %v", err)
	}
	if s := r.String(); !strings.Contains(s, "init_on_free=off") || !strings.Contains(s, "swap=off") {
		t.Errorf("summary %q", s)
	}
}
