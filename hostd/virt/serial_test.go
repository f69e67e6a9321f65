package virt

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/internal/desktopimage"
	"deskhost/internal/testenv"
	"deskhost/internal/virtlogconf"
)

// TestSerialLogCapped: a real guest that writes to its serial port without end (the kernel
// printing every timer event) cannot grow its serial log past virtlogd's cap: the log is
// rotated at virtlogconf.MaxSize with virtlogconf.MaxBackups old files, and the guest keeps
// running. The libvirtd is libvirtrun's, whose virtlogd.conf carries the cap.
func TestSerialLogCapped(t *testing.T) {
	sock := testenv.LibvirtSocket(t)
	img, err := desktopimage.Load(testenv.DesktopImage(t))
	if err != nil {
		t.Fatal(err)
	}
	conf, err := os.ReadFile(filepath.Join(filepath.Dir(filepath.Dir(sock)), "etc", "virtlogd.conf"))
	if err != nil || !strings.Contains(string(conf), virtlogconf.Settings()) {
		testenv.Missing(t, "the libvirtd at "+sock+" is not libvirtrun's with the serial log cap (restart it with bin/libvirtrun)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	conn, err := Dial(ctx, sock)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	spec, _ := defineTestGuest(t, conn, &img, "serial", func(s *Spec) {
		s.Cmdline = strings.ReplaceAll(img.Manifest.Cmdline, "quiet", "") + " ignore_loglevel trace_event=timer:* tp_printk"
	})
	name, serial := spec.Name, spec.SerialLog
	if err := conn.Start(name); err != nil {
		t.Fatal(err)
	}

	// Wait until virtlogd has rotated MaxBackups times, then watch the guest keep writing.
	oldest := serial + "." + strconv.Itoa(virtlogconf.MaxBackups-1)
	deadline := time.Now().Add(4 * time.Minute)
	for {
		if _, err := os.Stat(oldest); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 4 minutes: the guest wrote %d bytes", filepath.Base(oldest), logBytes(t, serial))
		}
		time.Sleep(time.Second)
	}
	first := logBytes(t, serial)
	var total int64
	written := false
	for i := 0; i < 10; i++ {
		time.Sleep(time.Second)
		total = logBytes(t, serial)
		if total > virtlogconf.Cap {
			t.Fatalf("serial logs hold %d bytes, more than the cap %d", total, virtlogconf.Cap)
		}
		files, _ := filepath.Glob(serial + "*")
		if len(files) > 1+virtlogconf.MaxBackups {
			t.Fatalf("serial log files %v: more than %d", files, 1+virtlogconf.MaxBackups)
		}
		written = written || total != first
	}
	if st, err := conn.State(name); err != nil || st != Running {
		t.Fatalf("guest %s %v", st, err)
	}
	head, _ := os.ReadFile(serial)
	if !written || !strings.Contains(string(head), "timer") {
		t.Errorf("the guest does not seem to keep writing (log %d → %d bytes)", first, total)
	}
	t.Logf("serial logs: %d bytes in %d+%d files, cap %d", total, 1, virtlogconf.MaxBackups, virtlogconf.Cap)
}

// logBytes is the size of the serial log and its rotated files.
func logBytes(t *testing.T, serial string) int64 {
	files, _ := filepath.Glob(serial + "*")
	var n int64
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// The serial console is a null chardev whose output libvirt hands to virtlogd (<log>), not
// a file qemu appends to without limit.
func TestSerialThroughVirtlogd(t *testing.T) {
	x, err := DomainXML(Spec{Name: "ws-0123456789", Type: "qemu", VCPUs: 1, MemoryMiB: 256, Kernel: "/k", RootVolume: "/r", UserVolume: "/u",
		Management: NIC{Bridge: "m"}, Primary: NIC{Bridge: "p"}, VNCSocket: "/v.sock", AgentSocket: "/a.sock", SerialLog: "/run/ws/serial.log"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(x, `<serial type="null">`) || !strings.Contains(x, `<log file="/run/ws/serial.log" append="on"></log>`) {
		t.Errorf("serial device:\n%s", x)
	}
}
