package appliance_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	diskfs "github.com/diskfs/go-diskfs"
	"github.com/klauspost/compress/zstd"

	"deskhost/imagebuild/appliance"
	"deskhost/imagebuild/profile"
	"deskhost/internal/argon2id"
	"deskhost/internal/testenv"
)

// A config baked into an image is every host's and anyone's who can fetch the PXE
// bundle: build refuses one with a secret, a NIC's MAC, a host name or catalog sections, naming each field
// and never repeating the secret, and writes nothing.
func TestBakedConfigRefused(t *testing.T) {
	repo, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "configs", "host-qemu.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	if err := appliance.CheckBakedConfig(write("repo.yaml", string(repo))); err != nil {
		t.Fatalf("configs/host-qemu.yaml cannot be baked: %v", err)
	}
	const inline = "inline-secret-0123456789abcdef"
	api := "  api:\n    socket: /run/deskhost/hostd.sock\n"
	hash, _ := argon2id.Hash("console password")
	for name, tc := range map[string]struct{ body, want string }{
		"access key": {strings.Replace(string(repo), api, api+"    listen: \":8443\"\n    accessKeys: [{id: AKIADESKHOSTTEST0001, secret: "+inline+"}]\n", 1),
			"hostd.api.accessKeys[0].secret holds a secret"},
		"console hash": {strings.Replace(string(repo), "    shell: true", "    shell: true\n    passwordHash: \""+hash+"\"", 1),
			"init.console.passwordHash holds a secret"},
		"catalog": {strings.Replace(string(repo), "  computeTypes:\n", "  images:\n    - {id: wsi-desktop001, name: desktop, os: linux, dir: /perm/images/desktop}\n  bundles:\n    - {id: wsb-value00001, name: Value, image: wsi-desktop001, computeType: VALUE, protocol: PCOIP, rootGiB: 80, userGiB: 10}\n  computeTypes:\n", 1),
			"hostd.images, hostd.bundles: the catalog is not part of an image"},
		"host name": {strings.Replace(string(repo), "init:\n", "init:\n  hostname: rack3-u12\n", 1), `init.hostname "rack3-u12" names one host`},
		"MAC":       {strings.Replace(string(repo), "        dhcp: true                    # which NIC", "        mac: \"52:54:00:12:34:01\"\n        dhcp: true                    # which NIC", 1), "init.network.interfaces.management.mac 52:54:00:12:34:01"},
	} {
		if tc.body == string(repo) {
			t.Fatalf("%s: configs/host-qemu.yaml changed; the test's edit no longer applies", name)
		}
		p := write(name+".yaml", tc.body)
		err := appliance.CheckBakedConfig(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", name, err, tc.want)
			continue
		}
		if strings.Contains(err.Error(), inline) || strings.Contains(err.Error(), hash) {
			t.Errorf("%s: the error repeats the secret: %v", name, err)
		}
		// build itself refuses it before anything is fetched or written.
		prof, err := profile.Load(filepath.Join(testenv.RepoRoot(), "configs", "appliance.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		prof.HostConfig = p
		out := filepath.Join(dir, "out-"+strings.ReplaceAll(name, " ", "-"))
		_, err = appliance.Build(context.Background(), appliance.Options{Profile: prof, Out: out, CacheDir: filepath.Join(dir, "cache"), SourceDir: testenv.RepoRoot()})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: build: %v", name, err)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: build left %s", name, out)
		}
	}
}

// needles are the test's secrets as they could appear in a file.
func needles() [][]byte {
	return [][]byte{[]byte(testSecret), []byte(base64.StdEncoding.EncodeToString([]byte(testSecret))), []byte(hex.EncodeToString([]byte(testSecret)))}
}

// scan reports which needle r contains, reading it in chunks that overlap by the longest
// needle.
func scan(r io.Reader) ([]byte, error) {
	ns := needles()
	keep := 0
	for _, n := range ns {
		keep = max(keep, len(n))
	}
	br := bufio.NewReaderSize(r, 1<<20)
	buf := make([]byte, 0, 1<<20+keep)
	chunk := make([]byte, 1<<20)
	for {
		n, err := io.ReadFull(br, chunk)
		buf = append(buf, chunk[:n]...)
		for _, nd := range ns {
			if bytes.Contains(buf, nd) {
				return nd, nil
			}
		}
		if len(buf) > keep {
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// TestNoSecretInArtifacts builds the appliance from a config that names an access key's
// secret by file, with the secret in that file on the build machine and in the build's
// environment, and finds it in no artifact: not in any output file, not inside the
// initramfs (decompressed), not on the disk image's EFI partition.
func TestNoSecretInArtifacts(t *testing.T) {
	dir, _ := image(t)
	scanned := 0
	check := func(what string, r io.Reader) {
		t.Helper()
		n, err := scan(r)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if n != nil {
			t.Errorf("%s contains the test secret (%q)", what, n)
		}
		scanned++
	}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		check(p, f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Inside the initramfs: the whole cpio stream, every file in it.
	f, err := os.Open(filepath.Join(dir, "pxe", "initrd.img"))
	if err != nil {
		t.Fatal(err)
	}
	z, err := zstd.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	check("the initramfs, decompressed", z)
	z.Close()
	f.Close()
	// The baked config names the file, and holds no secret.
	tmp := t.TempDir()
	unpackInitramfs(t, filepath.Join(dir, "pxe", "initrd.img"), tmp)
	baked, err := os.ReadFile(filepath.Join(tmp, "root", "etc", "deskhost", "host.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(baked), "secretFile: "+secretFile) {
		t.Errorf("the baked config does not name the secret file:\n%s", baked)
	}
	// The disk image's EFI partition: its initramfs is the PXE bundle's (scanned above),
	// the rest is read file by file.
	d, err := diskfs.Open(filepath.Join(dir, "disk.img"), diskfs.WithOpenMode(diskfs.ReadOnly))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	esp, err := d.GetFilesystem(1)
	if err != nil {
		t.Fatal(err)
	}
	initrdSum := fileSum(t, filepath.Join(dir, "pxe", "initrd.img"))
	espFiles := 0
	err = fs.WalkDir(esp, ".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := fs.ReadFile(esp, p)
		if err != nil {
			return err
		}
		espFiles++
		if strings.EqualFold(e.Name(), "initrd.img") {
			if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != initrdSum {
				t.Errorf("ESP %s is not the PXE bundle's initramfs", p)
			}
		}
		check("disk.img ESP "+p, bytes.NewReader(b))
		return nil
	})
	if err != nil || espFiles < 4 {
		t.Fatalf("reading the ESP: %v (%d files)", err, espFiles)
	}
	t.Logf("no trace of the test secret in %d files and streams (plain, base64, hex)", scanned)
}
