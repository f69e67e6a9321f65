// Package ext4img builds small ext4 filesystem images reproducibly with e2fsprogs
// (mke2fs -d), and converts them to qcow2 with qemu-img. Same tree, same options ->
// byte-identical image: the UUID and directory hash seed are fixed, E2FSPROGS_FAKE_TIME
// pins the superblock's times, and debugfs then pins every inode's times and owner
// (mke2fs copies ctime from the source tree, which no one can set).
package ext4img

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Entry is one file, directory or symlink of the tree to put in the image.
type Entry struct {
	Path   string      // absolute, e.g. /etc/os-release
	Mode   fs.FileMode // permission bits plus fs.ModeDir or fs.ModeSymlink
	Data   []byte      // file contents
	Target string      // symlink target
	UID    int
	GID    int
}

// Options of an image.
type Options struct {
	SizeMiB  int
	Label    string
	UUID     string    // filesystem UUID (fixed for reproducibility)
	HashSeed string    // directory hash seed, a UUID
	Time     time.Time // every timestamp in the image
	Entries  []Entry
}

var (
	uuidRe = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
	nameRe = regexp.MustCompile(`^(/[A-Za-z0-9._+@-]+)+$`)
)

func (o *Options) check() error {
	if o.SizeMiB < 8 {
		return fmt.Errorf("ext4img: size %d MiB is too small (at least 8)", o.SizeMiB)
	}
	if !uuidRe.MatchString(o.UUID) || !uuidRe.MatchString(o.HashSeed) {
		return fmt.Errorf("ext4img: UUID %q and hash seed %q must be lower-case UUIDs", o.UUID, o.HashSeed)
	}
	if len(o.Label) > 16 {
		return fmt.Errorf("ext4img: label %q longer than 16 bytes", o.Label)
	}
	if o.Time.IsZero() || o.Time.Unix() < 0 {
		return fmt.Errorf("ext4img: no timestamp")
	}
	for _, e := range o.Entries {
		// Paths end up in debugfs commands: keep them plain.
		if !nameRe.MatchString(e.Path) || strings.Contains(e.Path, "/../") || strings.HasSuffix(e.Path, "/..") || strings.Contains(e.Path, "/./") {
			return fmt.Errorf("ext4img: path %q: use absolute paths of [A-Za-z0-9._+@-] components", e.Path)
		}
	}
	return nil
}

// Build writes a raw ext4 image of o.SizeMiB to out.
func Build(ctx context.Context, out string, o Options) error {
	if err := o.check(); err != nil {
		return err
	}
	for _, tool := range []string{"mke2fs", "debugfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			if _, err2 := os.Stat("/sbin/" + tool); err2 != nil {
				return fmt.Errorf("ext4img: %s not found (package e2fsprogs): %w", tool, err)
			}
		}
	}
	stage, err := os.MkdirTemp(filepath.Dir(out), ".ext4-stage-")
	if err != nil {
		return fmt.Errorf("ext4img: %w", err)
	}
	defer os.RemoveAll(stage)

	entries := append([]Entry(nil), o.Entries...)
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	owners := map[string][2]int{"/": {0, 0}}
	for _, e := range entries {
		p := filepath.Join(stage, e.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		switch {
		case e.Mode&fs.ModeDir != 0:
			if err := os.MkdirAll(p, 0o755); err != nil {
				return err
			}
		case e.Mode&fs.ModeSymlink != 0:
			if err := os.Symlink(e.Target, p); err != nil {
				return err
			}
		case e.Mode.Type() == 0:
			if err := os.WriteFile(p, e.Data, 0o600); err != nil {
				return err
			}
		default:
			return fmt.Errorf("ext4img: %s: unsupported file type %v", e.Path, e.Mode.Type())
		}
		if e.Mode&fs.ModeSymlink == 0 {
			if err := os.Chmod(p, e.Mode.Perm()|e.Mode&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)); err != nil {
				return err
			}
		}
		owners[e.Path] = [2]int{e.UID, e.GID}
	}
	// Every path in the staging tree (including implicit parents) gets fixed metadata.
	var paths []string
	err = filepath.WalkDir(stage, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(stage, p)
		paths = append(paths, "/"+strings.TrimPrefix(rel, "."))
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)

	env := append(os.Environ(),
		"E2FSPROGS_FAKE_TIME="+strconv.FormatInt(o.Time.Unix(), 10),
		"SOURCE_DATE_EPOCH="+strconv.FormatInt(o.Time.Unix(), 10),
		"MKE2FS_DEVICE_SECTSIZE=512", "MKE2FS_DEVICE_PHYS_SECTSIZE=512",
		"LC_ALL=C")
	_ = os.Remove(out)
	args := []string{"-q", "-F", "-t", "ext4", "-b", "4096", "-d", stage, "-U", o.UUID,
		"-E", "hash_seed=" + o.HashSeed + ",root_owner=0:0,lazy_itable_init=0,lazy_journal_init=0,nodiscard",
		"-L", o.Label, out, strconv.Itoa(o.SizeMiB) + "M"}
	if err := run(ctx, env, "mke2fs", args...); err != nil {
		return err
	}
	var cmds bytes.Buffer
	ts := "@" + strconv.FormatInt(o.Time.Unix(), 10)
	for _, p := range paths {
		own := owners[p]
		for _, f := range []string{"atime", "mtime", "ctime", "crtime"} {
			fmt.Fprintf(&cmds, "sif \"%s\" %s %s\n", p, f, ts)
		}
		fmt.Fprintf(&cmds, "sif \"%s\" uid %d\nsif \"%s\" gid %d\n", p, own[0], p, own[1])
	}
	cmdFile := filepath.Join(stage, ".debugfs-cmds")
	if err := os.WriteFile(cmdFile, cmds.Bytes(), 0o600); err != nil {
		return err
	}
	// The command file lives in the staging tree, which is already copied by now.
	if err := run(ctx, env, "debugfs", "-w", "-f", cmdFile, out); err != nil {
		return err
	}
	return run(ctx, env, "e2fsck", "-fn", out)
}

// ToQcow2 converts a raw image to qcow2 (deterministic for the same input).
func ToQcow2(ctx context.Context, raw, out string) error {
	_ = os.Remove(out)
	return run(ctx, nil, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out)
}

func run(ctx context.Context, env []string, name string, args ...string) error {
	bin, err := exec.LookPath(name)
	if err != nil {
		if _, err2 := os.Stat("/sbin/" + name); err2 == nil {
			bin = "/sbin/" + name
		} else {
			return fmt.Errorf("ext4img: %s not found (install the packages in scripts/packages/imagebuild.txt)", name)
		}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	var outb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &outb, &outb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ext4img: %s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(outb.String()))
	}
	// debugfs reports command errors on stderr but exits 0.
	if name == "debugfs" {
		for _, l := range strings.Split(outb.String(), "\n") {
			l = strings.TrimSpace(l)
			// Echoed commands ("debugfs: sif ...") and the version banner are fine.
			if l != "" && !strings.HasPrefix(l, "debugfs: ") && !strings.HasPrefix(l, "debugfs 1.") {
				return fmt.Errorf("ext4img: debugfs: %s", l)
			}
		}
	}
	return nil
}
