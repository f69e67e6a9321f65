package flash

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"deskhost/internal/testenv"
)

// loop attaches a loop device to a new file of size bytes.
func loop(t *testing.T, size int64) string {
	t.Helper()
	testenv.Root(t)
	if _, err := exec.LookPath("losetup"); err != nil {
		testenv.Missing(t, "losetup (util-linux) is not installed")
	}
	f := filepath.Join(t.TempDir(), "backing")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(f, size); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", f).CombinedOutput()
	if err != nil {
		testenv.Missing(t, "a loop device: "+strings.TrimSpace(string(out)))
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	return dev
}

func image(t *testing.T, size int) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	// Zero runs too: flash must write them (a blank /perm must be blank on the disk).
	for i := size / 2; i < size/2+1<<20; i++ {
		data[i] = 0
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, data
}

func TestFlashAndVerify(t *testing.T) {
	img, data := image(t, 24<<20+512)
	dev := loop(t, 32<<20)
	// Old data where the image has zeros must not survive.
	junk := bytes.Repeat([]byte{0xAB}, 32<<20)
	if err := os.WriteFile(dev, junk, 0); err != nil {
		t.Fatal(err)
	}
	var phases []string
	r, err := Flash(context.Background(), img, dev, func(phase string, done, total int64, _ time.Duration) {
		if len(phases) == 0 || phases[len(phases)-1] != phase {
			phases = append(phases, phase)
		}
		if done > total {
			t.Errorf("progress %d of %d", done, total)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != int64(len(data)) || strings.Join(phases, ",") != "write,verify" {
		t.Errorf("result %+v, phases %v", r, phases)
	}
	got := make([]byte, len(data))
	f, err := os.Open(dev)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("the device does not hold the image")
	}
}

func TestFlashRefuses(t *testing.T) {
	img, _ := image(t, 8<<20)
	small := loop(t, 4<<20)
	if _, err := Flash(context.Background(), img, small, nil); err == nil || !strings.Contains(err.Error(), "smaller than the image") {
		t.Errorf("small device: %v", err)
	}
	mounted := loop(t, 16<<20)
	if out, err := exec.Command("mkfs.ext4", "-q", "-F", mounted).CombinedOutput(); err != nil {
		t.Fatalf("mkfs: %v: %s", err, out)
	}
	mnt := t.TempDir()
	if out, err := exec.Command("mount", mounted, mnt).CombinedOutput(); err != nil {
		t.Fatalf("mount: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", mnt).Run() })
	if _, err := Flash(context.Background(), img, mounted, nil); err == nil || !strings.Contains(err.Error(), "is mounted") {
		t.Errorf("mounted device: %v", err)
	}
	// Still intact: nothing was written.
	if out, err := exec.Command("ls", mnt).CombinedOutput(); err != nil || !strings.Contains(string(out), "lost+found") {
		t.Errorf("the mounted file system was touched: %v %s", err, out)
	}
	if _, err := Flash(context.Background(), img, img, nil); err == nil || !strings.Contains(err.Error(), "not a block device") {
		t.Errorf("a regular file as the device: %v", err)
	}
	if _, err := Flash(context.Background(), filepath.Join(t.TempDir(), "none.img"), small, nil); err == nil || !strings.Contains(err.Error(), "image") {
		t.Errorf("missing image: %v", err)
	}
}
