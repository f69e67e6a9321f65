package virt

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/desktopimage"
	"deskhost/internal/testenv"
)

func TestDomainEncryptedDisks(t *testing.T) {
	s := spec()
	s.UserSecret = VolumeSecretUUID(s.UserVolume)
	x, err := DomainXML(s)
	if err != nil {
		t.Fatal(err)
	}
	d, err := Domain(s)
	if err != nil {
		t.Fatal(err)
	}
	root, user := d.Devices.Disks[0], d.Devices.Disks[1]
	if root.Source.Encryption != nil || root.Encryption != nil {
		t.Errorf("the plain root disk has encryption: %s", x)
	}
	e := user.Source.Encryption
	if e == nil || e.Format != "luks" || len(e.Secrets) != 1 || e.Secrets[0].Type != "passphrase" || e.Secrets[0].UUID != s.UserSecret {
		t.Errorf("the encrypted user disk's source: %+v\n%s", e, x)
	}
	if VolumeSecretUUID("/a") == VolumeSecretUUID("/b") || VolumeSecretUUID("/a") != VolumeSecretUUID("/a") {
		t.Error("volume secret UUIDs are not one per path")
	}
}

// TestEncryptedVolume: on real libvirt, a LUKS qcow2 volume over the desktop image's root
// is listed by the pool as encrypted, opens with its passphrase and not with another,
// and its secret comes and goes. Figures: its creation against a plain volume's, and an
// open of it against one with qemu's default iter-time.
func TestEncryptedVolume(t *testing.T) {
	sock := testenv.LibvirtSocket(t)
	img, err := desktopimage.Load(testenv.DesktopImage(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	dir, err := os.MkdirTemp("", "dhenc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	pool := "dhenc-" + filepath.Base(dir)[5:]
	if err := conn.EnsurePool(pool, dir); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.DestroyPool(pool) })

	pass := []byte(strings.Repeat("0123456789abcdef", 4))
	path := filepath.Join(dir, "ws-enc-root.qcow2")
	uuid, err := conn.DefineVolumeSecret(path, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.UndefineVolumeSecret(path) })
	if ok, err := conn.HasVolumeSecret(path); !ok || err != nil || uuid != VolumeSecretUUID(path) {
		t.Fatalf("secret after define: %v %v %s", ok, err, uuid)
	}
	start := time.Now()
	v, err := conn.CreateEncryptedVolume(pool, "ws-enc-root.qcow2", 80, img.Root, pass)
	if err != nil {
		t.Fatal(err)
	}
	encTook := time.Since(start)
	if !v.Encrypted || v.Path != path || v.Backing != img.Root || v.CapacityGiB != 80 {
		t.Fatalf("encrypted volume: %+v", v)
	}
	if again, err := conn.CreateEncryptedVolume(pool, "ws-enc-root.qcow2", 80, img.Root, pass); err != nil || again != v {
		t.Fatalf("second create: %v %+v", err, again)
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("volume file: %v %v", err, st.Mode())
	}
	start = time.Now()
	if _, err := conn.CreateVolume(pool, "ws-plain-root.qcow2", 80, img.Root); err != nil {
		t.Fatal(err)
	}
	plainTook := time.Since(start)
	vols, err := conn.Volumes(pool, "ws-")
	if err != nil || len(vols) != 2 {
		t.Fatalf("pool lists %v (%v), want both volumes", vols, err)
	}

	open := func(p string, secret []byte) (time.Duration, error) {
		start := time.Now()
		err := runWithSecret(secret, "qemu-img", "check", "-q", "--object", "secret,id=s0,file=/dev/fd/3",
			"--image-opts", "driver=qcow2,encrypt.key-secret=s0,file.filename="+p)
		return time.Since(start), err
	}
	fast, err := open(path, pass)
	if err != nil {
		t.Fatalf("open with its passphrase: %v", err)
	}
	if _, err := open(path, []byte("wrong")); err == nil || !strings.Contains(err.Error(), "Invalid password") {
		t.Fatalf("open with another passphrase: %v", err)
	}
	slowPath := filepath.Join(t.TempDir(), "default.qcow2")
	if err := runWithSecret(pass, "qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,file=/dev/fd/3",
		"-o", "encrypt.format=luks,encrypt.key-secret=s0", slowPath, "1G"); err != nil {
		t.Skipf("qemu's default LUKS volume for the figure: %v", err)
	}
	slow, err := open(slowPath, pass)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("figure: create encrypted %s vs plain %s (%.1f×); open with iter-time %d ms %s vs qemu's default %s (%.3f×)",
		encTook.Round(time.Millisecond), plainTook.Round(time.Millisecond), encTook.Seconds()/plainTook.Seconds(),
		LUKSIterTimeMs, fast.Round(time.Millisecond), slow.Round(time.Millisecond), fast.Seconds()/slow.Seconds())

	if err := conn.DeleteVolume(pool, "ws-enc-root.qcow2"); err != nil {
		t.Fatal(err)
	}
	if err := conn.UndefineVolumeSecret(path); err != nil {
		t.Fatal(err)
	}
	if ok, err := conn.HasVolumeSecret(path); ok || err != nil {
		t.Fatalf("secret after undefine: %v %v", ok, err)
	}
	if err := conn.UndefineVolumeSecret(path); err != nil {
		t.Fatalf("undefine of a missing secret: %v", err)
	}
	if _, err := exec.LookPath("qemu-img"); err != nil {
		t.Fatal(err)
	}
}
