package hostcfg

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"deskhost/imagebuild/serve"
)

func TestCmdline(t *testing.T) {
	p := Cmdline("console=ttyS0 quiet deskhost.config=/a deskhost.config=http://x/y init_on_free=1")
	if p["deskhost.config"] != "http://x/y" || p["init_on_free"] != "1" {
		t.Errorf("%v", p)
	}
	if _, ok := p["quiet"]; !ok {
		t.Error("flag without '=' lost")
	}
}

func TestFindOrder(t *testing.T) {
	dir := t.TempDir()
	baked, perm := filepath.Join(dir, "baked.yaml"), filepath.Join(dir, "perm.yaml")
	f := &Finder{Baked: baked, Perm: perm, Bootstrap: func(context.Context) (func(), error) { return func() {}, nil }}
	ctx := context.Background()
	if _, _, err := f.Find(ctx, nil); err == nil || !strings.Contains(err.Error(), "no host config") {
		t.Errorf("nothing anywhere: %v", err)
	}
	os.WriteFile(perm, []byte("perm"), 0o600)
	if b, src, err := f.Find(ctx, nil); err != nil || string(b) != "perm" || src.Kind != "perm" {
		t.Errorf("perm: %q %v %v", b, src, err)
	}
	os.WriteFile(baked, []byte("baked"), 0o600)
	if b, src, err := f.Find(ctx, nil); err != nil || string(b) != "baked" || src.Kind != "baked" {
		t.Errorf("baked over perm: %q %v %v", b, src, err)
	}
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte("cmdline"), 0o600)
	if b, src, err := f.Find(ctx, map[string]string{"deskhost.config": other}); err != nil || string(b) != "cmdline" || src.Kind != "cmdline" {
		t.Errorf("cmdline path: %q %v %v", b, src, err)
	}
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": "relative.yaml"}); err == nil {
		t.Error("a relative path was accepted")
	}
	if _, _, err := f.Find(ctx, map[string]string{"deskhost.config": filepath.Join(dir, "none")}); err == nil {
		t.Error("a missing cmdline path fell back to another config")
	}
}

// A URL is fetched from imagebuild serve, over HTTP and over TFTP.
func TestFindURL(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "host.yaml"), []byte("hostd: {}\n"), 0o644)
	s, err := serve.New(dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	l, err := serve.Listen("127.0.0.1:0", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, l)
	ups := 0
	f := &Finder{Baked: filepath.Join(dir, "none"), Bootstrap: func(context.Context) (func(), error) {
		ups++
		return func() {}, nil
	}}
	for _, u := range []string{"http://" + l.HTTP.Addr().String() + "/host.yaml", "tftp://" + l.TFTP.LocalAddr().String() + "/host.yaml"} {
		b, src, err := f.Find(ctx, map[string]string{"deskhost.config": u})
		if err != nil || string(b) != "hostd: {}\n" || src.Location != u {
			t.Errorf("%s: %q %v", u, b, err)
		}
	}
	if ups != 2 {
		t.Errorf("bootstrap network brought up %d times, want 2", ups)
	}
	if _, err := Fetch(ctx, "ftp://x/y"); err == nil {
		t.Error("ftp accepted")
	}
	if _, err := Fetch(ctx, "http://"+l.HTTP.Addr().String()+"/missing.yaml"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("missing over HTTP: %v", err)
	}
}
