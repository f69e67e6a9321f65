package virt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"deskhost/hostd/confine"
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
	defer conn.Close()

	dir, err := os.MkdirTemp("", "dhserial")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	root, user := filepath.Join(dir, "root.qcow2"), filepath.Join(dir, "user.qcow2")
	for _, args := range [][]string{
		{"create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", img.Root, root},
		{"create", "-q", "-f", "qcow2", user, "1G"},
	} {
		if out, err := exec.Command("qemu-img", args...).CombinedOutput(); err != nil {
			t.Fatalf("qemu-img: %v %s", err, out)
		}
	}
	// qemu runs as libvirt-qemu, as hostd runs it: the directory and volumes are handed to it.
	guests, err := confine.Lookup("libvirt-qemu", "", "", false)
	if err != nil {
		testenv.Missing(t, "libvirt's qemu user: "+err.Error())
	}
	if err := guests.Prepare(dir, []string{root, user}, []string{img.Kernel, img.Initrd, img.Root}); err != nil {
		t.Fatal(err)
	}
	suffix := strings.TrimPrefix(filepath.Base(dir), "dhserial")
	mgmt, pri := "dsm"+suffix, "dsp"+suffix
	testenv.Bridge(t, mgmt)
	testenv.Bridge(t, pri)
	serial := filepath.Join(dir, "serial.log")
	name := "serialcap-" + suffix
	cmdline := strings.ReplaceAll(img.Manifest.Cmdline, "quiet", "") + " ignore_loglevel trace_event=timer:* tp_printk"
	spec := Spec{Name: name, Owner: "serialcap-test", Type: "qemu", VCPUs: 1, MemoryMiB: 256,
		Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: cmdline, RootVolume: root, UserVolume: user,
		Management: NIC{Bridge: mgmt}, Primary: NIC{Bridge: pri},
		VNCSocket: filepath.Join(dir, "vnc.sock"), AgentSocket: filepath.Join(dir, "agent.sock"), SerialLog: serial, RunAs: guests.Label()}
	if err := conn.Define(spec); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = conn.Destroy(name)
		_ = conn.Undefine(name)
	}()
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
