package desktop_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"deskhost/imagebuild/desktop"
	"deskhost/imagebuild/internal/testenv"
	"deskhost/imagebuild/kernel"
)

func need(t testing.TB, ok bool, why string)  { t.Helper(); testenv.Need(t, ok, why) }
func needTools(t testing.TB, tools ...string) { t.Helper(); testenv.NeedTools(t, tools...) }
func cacheDir(t testing.TB) string            { return testenv.CacheDir(t) }

var (
	buildOnce sync.Once
	builtDir  string
	builtMan  *desktop.Manifest
	buildErr  error
	buildTime time.Duration
	imagesDir string
)

func TestMain(m *testing.M) {
	if os.Getenv(metadataHelperEnv) != "" {
		serveMetadataOnce() // qemu's guestfwd runs the test binary per connection
		return
	}
	code := m.Run()
	for _, d := range []string{imagesDir, graphicalTmp} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

func buildTools(t testing.TB) {
	needTools(t, "apt-get", "apt-cache", "dpkg-deb", "mke2fs", "debugfs", "e2fsck", "qemu-img", "go")
}

// image builds the desktop image once per test package.
func image(t testing.TB) (string, *desktop.Manifest) {
	t.Helper()
	buildTools(t)
	buildOnce.Do(func() {
		imagesDir, buildErr = os.MkdirTemp("", "deskhost-desktop-test-")
		if buildErr != nil {
			return
		}
		builtDir = filepath.Join(imagesDir, "a")
		start := time.Now()
		builtMan, buildErr = desktop.Build(context.Background(), desktop.Options{
			Out: builtDir, CacheDir: cacheDir(t),
			Log: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "build: "+f+"\n", a...) },
		})
		buildTime = time.Since(start)
	})
	if errors.Is(buildErr, kernel.ErrDownload) {
		need(t, false, buildErr.Error())
	}
	if buildErr != nil {
		t.Fatalf("building the desktop image: %v", buildErr)
	}
	return builtDir, builtMan
}

// vm is a qemu process booted from a desktop image, as hostd's domains are (direct
// kernel boot, TCG, root qcow2 child + user volume on virtio, the agent channel).
type vm struct {
	t      testing.TB
	cmd    *exec.Cmd
	dir    string
	sock   string
	lines  chan string
	serial *strings.Builder
	mu     sync.Mutex
	done   chan struct{}
	err    error // qemu's exit, valid after done
}

type vmOpts struct {
	kernel, initrd, root string
	cmdline              string
	home                 string // existing user volume to reuse; "" makes a blank 10G one
	memMiB, cpus         int    // default 256 MiB, 1 vCPU
	env                  []string
	extra                []string
}

func bootVM(t testing.TB, o vmOpts) *vm {
	t.Helper()
	needTools(t, "qemu-system-x86_64", "qemu-img")
	dir := t.TempDir()
	child := filepath.Join(dir, "root.qcow2")
	run(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", o.root, "-F", "qcow2", child, "80G")
	home := o.home
	if home == "" {
		home = filepath.Join(dir, "home.qcow2")
		run(t, "qemu-img", "create", "-q", "-f", "qcow2", home, "10G")
	}
	sock := filepath.Join(dir, "agent.sock")
	mem, cpus := o.memMiB, o.cpus
	if mem == 0 {
		mem = 256
	}
	if cpus == 0 {
		cpus = 1
	}
	args := []string{"-accel", "tcg", "-m", strconv.Itoa(mem), "-smp", strconv.Itoa(cpus), "-nographic", "-nodefaults", "-vga", "std",
		"-serial", "stdio", "-monitor", "unix:" + filepath.Join(dir, "monitor.sock") + ",server=on,wait=off",
		"-kernel", o.kernel, "-initrd", o.initrd, "-append", o.cmdline,
		"-drive", "file=" + child + ",if=virtio,format=qcow2",
		"-drive", "file=" + home + ",if=virtio,format=qcow2",
		"-device", "virtio-serial",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.deskhost.agent.0",
	}
	args = append(args, o.extra...)
	cmd := exec.Command("qemu-system-x86_64", args...)
	cmd.Env = append(os.Environ(), o.env...)
	cmd.Stdin = nil
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	v := &vm{t: t, cmd: cmd, dir: dir, sock: sock, lines: make(chan string, 1024), serial: &strings.Builder{}, done: make(chan struct{})}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting qemu: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			l := strings.TrimRight(sc.Text(), "\r")
			v.mu.Lock()
			v.serial.WriteString(l + "\n")
			v.mu.Unlock()
			select {
			case v.lines <- l:
			default:
			}
		}
		v.err = cmd.Wait()
		close(v.lines)
		close(v.done)
	}()
	t.Cleanup(func() {
		select {
		case <-v.done:
		default:
			_ = cmd.Process.Kill()
			<-v.done
		}
		if t.Failed() {
			t.Logf("serial console:\n%s", v.Serial())
		}
	})
	return v
}

func (v *vm) Serial() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.serial.String()
}

// waitLine waits for a serial line containing s.
func (v *vm) waitLine(s string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case l, ok := <-v.lines:
			if !ok {
				return 0, fmt.Errorf("qemu exited (%v) before %q", v.err, s)
			}
			if strings.Contains(l, s) {
				return time.Since(start), nil
			}
		case <-tm.C:
			return 0, fmt.Errorf("no %q on the serial console after %v", s, timeout)
		}
	}
}

// waitExit waits for qemu to exit and returns its error (nil: status 0).
func (v *vm) waitExit(timeout time.Duration) (error, bool) {
	// Drain lines so the reader never blocks.
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		select {
		case _, ok := <-v.lines:
			if !ok {
				<-v.done
				return v.err, true
			}
		case <-tm.C:
			return nil, false
		}
	}
}

// screendump saves the VM's display as a PPM file through the human monitor.
func (v *vm) screendump(path string) error {
	c, err := net.Dial("unix", filepath.Join(v.dir, "monitor.sock"))
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.Write([]byte("screendump " + path + "\n")); err != nil {
		return err
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if st, err := os.Stat(path); err == nil && st.Size() > 0 {
			time.Sleep(200 * time.Millisecond) // let qemu finish writing it
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("no screendump at %s", path)
}

// readPPM reads a binary PPM (P6, maxval 255).
func readPPM(path string) (w, h int, pix []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, nil, err
	}
	defer f.Close()
	r := bufio.NewReader(f)
	var magic string
	var maxval int
	if _, err := fmt.Fscan(r, &magic, &w, &h, &maxval); err != nil {
		return 0, 0, nil, err
	}
	if magic != "P6" || maxval != 255 {
		return 0, 0, nil, fmt.Errorf("not a P6/255 PPM: %s %d", magic, maxval)
	}
	r.ReadByte()
	pix = make([]byte, w*h*3)
	_, err = io.ReadFull(r, pix)
	return w, h, pix, err
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
