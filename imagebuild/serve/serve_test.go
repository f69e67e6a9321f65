package serve

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"pack.ag/tftp"
)

// start serves a bundle directory, next to a secret file that must stay unreachable.
func start(t *testing.T) (*Server, string, string) {
	t.Helper()
	top := t.TempDir()
	dir := filepath.Join(top, "pxe")
	os.MkdirAll(filepath.Join(dir, "sub"), 0o755)
	os.WriteFile(filepath.Join(top, "secret"), []byte("do not serve"), 0o600)
	os.WriteFile(filepath.Join(dir, "boot.ipxe"), []byte("#!ipxe\nkernel vmlinuz\n"), 0o644)
	big := make([]byte, 3<<20+17)
	for i := range big {
		big[i] = byte(i * 7)
	}
	os.WriteFile(filepath.Join(dir, "initrd.img"), big, 0o644)
	os.WriteFile(filepath.Join(dir, "sub", "x"), []byte("x"), 0o644)
	os.Symlink("../secret", filepath.Join(dir, "escape"))
	s, err := New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, l); close(done) }()
	t.Cleanup(func() { cancel(); <-done; s.Close() })
	return s, l.HTTP.Addr().String(), l.TFTP.LocalAddr().String()
}

// rawGet sends a request line as is (clients clean "../" away before sending).
func rawGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHTTP(t *testing.T) {
	s, addr, _ := start(t)
	code, body := rawGet(t, addr, "/boot.ipxe")
	if code != 200 || !strings.HasPrefix(body, "#!ipxe") {
		t.Fatalf("boot.ipxe: %d %q", code, body)
	}
	code, body = rawGet(t, addr, "/initrd.img")
	if code != 200 || len(body) != 3<<20+17 || body[1000] != byte(1000*7%256) {
		t.Errorf("initrd.img: %d, %d bytes", code, len(body))
	}
	for _, p := range []string{"/../secret", "/sub/../../secret", "/%2e%2e/secret", "/..%2fsecret"} {
		if code, body := rawGet(t, addr, p); code != http.StatusForbidden || strings.Contains(body, "do not serve") {
			t.Errorf("GET %s: %d %q; want 403", p, code, body)
		}
	}
	for _, p := range []string{"/escape", "/nothere", "/sub", "/"} {
		if code, body := rawGet(t, addr, p); code == 200 || strings.Contains(body, "do not serve") {
			t.Errorf("GET %s: %d %q; want an error", p, code, body)
		}
	}
	if s.Sent()["boot.ipxe"] != 1 {
		t.Errorf("sent: %v", s.Sent())
	}
}

func TestTFTP(t *testing.T) {
	_, _, addr := start(t)
	c, err := tftp.NewClient(tftp.ClientBlocksize(1428), tftp.ClientTransferSize(true))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Get("tftp://" + addr + "/initrd.img")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := resp.Size(); err != nil || n != 3<<20+17 {
		t.Errorf("tsize %d %v", n, err)
	}
	b, err := io.ReadAll(resp)
	if err != nil || len(b) != 3<<20+17 || b[12345] != byte(12345*7%256) {
		t.Errorf("initrd.img over TFTP: %d bytes, %v", len(b), err)
	}
	for _, p := range []string{"../secret", "sub/../../secret", "/../secret", "escape"} {
		resp, err := c.Get("tftp://" + addr + "/" + p)
		if err == nil {
			b, _ := io.ReadAll(resp)
			t.Errorf("TFTP %s was served: %q", p, b)
			continue
		}
		if strings.Contains(p, "..") && !strings.Contains(err.Error(), "outside") {
			t.Errorf("TFTP %s: %v; want an access violation", p, err)
		}
	}
}

func TestNewRefusesAFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	os.WriteFile(f, nil, 0o644)
	if _, err := New(f, nil); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("New(file): %v", err)
	}
	if _, err := New(filepath.Join(t.TempDir(), "none"), nil); err == nil {
		t.Error("New(missing) worked")
	}
}
