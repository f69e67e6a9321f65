// Package hostdtest is what end-to-end tests need to run the real hostd binary (and its
// neighbours): building the binaries once per package, child processes with their
// output kept, hostd's API client over its unix socket, a catalog for an in-process
// service, and removing whatever domains and volumes a test's hostd left in the shared
// libvirtd.
package hostdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"deskhost/hostd/service"
	"deskhost/hostd/virt"
	"deskhost/internal/catalog"
	"deskhost/internal/hostconfig"
	"deskhost/internal/hostdclient"
)

// Build compiles the main packages (import paths, e.g. "deskhost/hostd") into a new
// temporary directory, each binary named after its last path element. TestMain calls it
// once and removes dir when the tests are done.
func Build(pkgs ...string) (dir string, err error) {
	dir, err = os.MkdirTemp("", "deskhost-bin")
	if err != nil {
		return "", err
	}
	for _, p := range pkgs {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, filepath.Base(p)), p).CombinedOutput()
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("build %s: %v\n%s", p, err, out)
		}
	}
	return dir, nil
}

// Proc is a child process whose output (stdout and stderr) is kept.
type Proc struct {
	Cmd *exec.Cmd
	out lockedBuf
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Start starts name with args, failing the test if it cannot.
func Start(t testing.TB, name string, args ...string) *Proc {
	t.Helper()
	p := &Proc{Cmd: exec.Command(name, args...)}
	p.Cmd.Stdout, p.Cmd.Stderr = &p.out, &p.out
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	return p
}

// Output is everything the process has written so far.
func (p *Proc) Output() string {
	if p == nil {
		return ""
	}
	return p.out.String()
}

// Tail is the last n bytes of Output.
func (p *Proc) Tail(n int) string { return Tail(p.Output(), n) }

// Stop sends SIGTERM to exactly this process and waits for it (SIGKILL after 30 s).
func (p *Proc) Stop() {
	if p == nil || p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { p.Cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-done
	}
}

// Kill ends the process with SIGKILL, so that none of its own cleanup runs, and waits.
func (p *Proc) Kill() {
	if p == nil || p.Cmd.Process == nil || p.Cmd.ProcessState != nil {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	_ = p.Cmd.Wait()
}

// Tail is the last n bytes of s, marked as cut when it is.
func Tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// RandHex is n random bytes in hex: suffixes that keep parallel runs' names apart.
func RandHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Client is hostd's API client (AWS's SDK WorkSpaces client with hostd's own operations)
// over hostd's root-only unix socket.
func Client(socket string) *hostdclient.Client { return hostdclient.Dial(socket) }

// RemoveLeftovers destroys and undefines the WorkSpace domains whose root disk lies under
// dataDir (another test's domains are left alone), deletes the volumes of pool, and the
// pool.
func RemoveLeftovers(conn *virt.Conn, dataDir, pool string) {
	doms, _ := conn.Domains("ws-")
	for _, d := range doms {
		if x, err := conn.XML(d); err == nil && x.Devices != nil && len(x.Devices.Disks) > 0 &&
			x.Devices.Disks[0].Source != nil && x.Devices.Disks[0].Source.File != nil &&
			strings.HasPrefix(x.Devices.Disks[0].Source.File.File, dataDir) {
			_ = conn.Destroy(d)
			_ = conn.Undefine(d)
		}
	}
	vols, _ := conn.Volumes(pool, "")
	for _, v := range vols {
		_ = conn.DeleteVolume(pool, v.Name)
	}
	_ = conn.DestroyPool(pool)
}

// Catalog is a catalog for a test's in-process hostd service.
type Catalog struct {
	Images      []catalog.Image
	Bundles     []catalog.Bundle
	Directories []catalog.Directory // registered, with their RegistrationCode if set
}

// SeedCatalog puts c into svc's store through the service's import of a host config's
// catalog sections: the records are checked as the API checks them.
func SeedCatalog(t testing.TB, svc *service.Service, c Catalog) {
	t.Helper()
	var l hostconfig.LegacyCatalog
	for i, im := range c.Images {
		l.Images = append(l.Images, hostconfig.Sourced[catalog.Image]{From: fmt.Sprintf("images[%d]", i), Item: im})
	}
	for i, b := range c.Bundles {
		l.Bundles = append(l.Bundles, hostconfig.Sourced[catalog.Bundle]{From: fmt.Sprintf("bundles[%d]", i), Item: b})
	}
	for i, d := range c.Directories {
		l.Directories = append(l.Directories, hostconfig.Sourced[catalog.Directory]{From: fmt.Sprintf("directories[%d]", i), Item: d})
	}
	if _, err := svc.ImportCatalog(context.Background(), &l, t.Name()); err != nil {
		t.Fatalf("seed the catalog: %v", err)
	}
}
