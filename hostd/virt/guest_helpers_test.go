package virt

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/hostd/confine"
	"deskhost/internal/desktopimage"
	"deskhost/internal/testenv"
)

// defineTestGuest defines a 256 MiB guest of the desktop image as hostd would: fresh
// volumes in a directory of its own handed to libvirt-qemu, bridges of its own (d, the
// tag's first letter, m or p, and a random suffix: within the 15 bytes of a link name), and its sockets and serial log in that directory.
// tweak may change the spec before it is defined. The guest is destroyed and undefined,
// and the directory removed, when the test ends (register conn's Close with t.Cleanup
// before this, so that it runs after).
func defineTestGuest(t *testing.T, conn *Conn, img *desktopimage.Image, tag string, tweak func(*Spec)) (Spec, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "dh"+tag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
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
	suffix := strings.TrimPrefix(filepath.Base(dir), "dh"+tag)
	mgmt, pri := "d"+tag[:1]+"m"+suffix, "d"+tag[:1]+"p"+suffix
	testenv.Bridge(t, mgmt)
	testenv.Bridge(t, pri)
	spec := Spec{Name: tag + "-" + suffix, Owner: tag + "-test", Type: "qemu", VCPUs: 1, MemoryMiB: 256,
		Kernel: img.Kernel, Initrd: img.Initrd, Cmdline: img.Manifest.Cmdline + " deskhost.workspace=ws-" + suffix, RootVolume: root, UserVolume: user,
		Management: NIC{Bridge: mgmt}, Primary: NIC{Bridge: pri},
		VNCSocket: filepath.Join(dir, "vnc.sock"), AgentSocket: filepath.Join(dir, "agent.sock"), SerialLog: filepath.Join(dir, "serial.log"), RunAs: guests.Label()}
	if tweak != nil {
		tweak(&spec)
	}
	if err := conn.Define(spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = conn.Destroy(spec.Name)
		_ = conn.Undefine(spec.Name)
	})
	return spec, dir
}
