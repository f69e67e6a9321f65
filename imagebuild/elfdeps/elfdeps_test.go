package elfdeps

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"deskhost/imagebuild/internal/testenv"
)

func TestResolveMke2fs(t *testing.T) {
	testenv.NeedTools(t, "mke2fs")
	files, err := Resolve("/usr/sbin/mke2fs")
	if err != nil {
		t.Fatal(err)
	}
	dsts := map[string]string{}
	for _, f := range files {
		dsts[f.Dst] = f.Src
		if st, err := os.Lstat(f.Src); err != nil || !st.Mode().IsRegular() {
			t.Errorf("%s: source %s is not a regular file (%v)", f.Dst, f.Src, err)
		}
	}
	for _, want := range []string{"/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libext2fs.so.2",
		"/lib/x86_64-linux-gnu/libcom_err.so.2", "/lib/x86_64-linux-gnu/libblkid.so.1", "/lib/x86_64-linux-gnu/libuuid.so.1", "/lib/x86_64-linux-gnu/libe2p.so.2"} {
		if _, ok := dsts[want]; !ok {
			t.Errorf("%s not resolved; got %v", want, files)
		}
	}
	for i := 1; i < len(files); i++ {
		if files[i-1].Dst >= files[i].Dst {
			t.Error("files not sorted by destination")
		}
	}
	if dyn, err := IsDynamic("/usr/sbin/mke2fs"); err != nil || !dyn {
		t.Errorf("IsDynamic: %v %v", dyn, err)
	}
}

func TestResolveErrors(t *testing.T) {
	if _, err := Resolve("/nonexistent"); err == nil {
		t.Error("missing program resolved")
	}
	notELF := filepath.Join(t.TempDir(), "script")
	os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755)
	if _, err := Resolve(notELF); err == nil {
		t.Error("a script resolved")
	}
	// A library that exists nowhere: point the search at an empty root.
	r := &Resolver{Root: t.TempDir()}
	testenv.NeedTools(t, "mke2fs")
	root := r.Root
	os.MkdirAll(filepath.Join(root, "usr/sbin"), 0o755)
	b, _ := os.ReadFile("/usr/sbin/mke2fs")
	os.WriteFile(filepath.Join(root, "usr/sbin/mke2fs"), b, 0o755)
	if _, err := r.Resolve("/usr/sbin/mke2fs"); err == nil || !strings.Contains(err.Error(), "ld-linux") && !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing library: %v", err)
	}
}

func TestLdSoConf(t *testing.T) {
	root := t.TempDir()
	os.MkdirAll(filepath.Join(root, "etc/ld.so.conf.d"), 0o755)
	os.WriteFile(filepath.Join(root, "etc/ld.so.conf"), []byte("# c\ninclude /etc/ld.so.conf.d/*.conf\n/opt/lib # trailing\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/ld.so.conf.d/b.conf"), []byte("/usr/lib/b\n"), 0o644)
	os.WriteFile(filepath.Join(root, "etc/ld.so.conf.d/a.conf"), []byte("/usr/lib/a\n\n"), 0o644)
	got := LdSoConfDirs(root, "/etc/ld.so.conf")
	if want := []string{"/usr/lib/a", "/usr/lib/b", "/opt/lib"}; !reflect.DeepEqual(got, want) {
		t.Errorf("got %v want %v", got, want)
	}
	if got := expandPath([]string{"$ORIGIN/../lib:/x", "${ORIGIN}/y"}, "/opt/app/bin"); !reflect.DeepEqual(got, []string{"/opt/app/lib", "/x", "/opt/app/bin/y"}) {
		t.Errorf("expand: %v", got)
	}
}
