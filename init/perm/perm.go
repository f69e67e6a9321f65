// Package perm finds, prepares and mounts the persistent data partition at /perm: the
// GPT partition named imagelayout.PermLabel (or the device deskhost.perm= names). It
// formats it (ext4) only when it is blank, so a partition that holds anything, even a
// file system init cannot read, is never formatted; such a host boots with /perm in
// memory and an alarm on the console.
package perm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// BlankBytes is how much of the start of a device must be zero for it to count as
// blank: every file system, RAID, LVM and LUKS signature init knows of lives in the
// first 1 MiB (ext4 at 1 KiB, XFS at 0, btrfs at 64 KiB, LVM at 512 B, MBR/GPT at 0).
const BlankBytes = 1 << 20

// State of /perm after Prepare.
type State struct {
	Device    string // e.g. /dev/vda2; "" when none was found
	Formatted bool   // formatted on this boot (it was blank)
	InMemory  bool   // no usable device: /perm is a tmpfs
	Problem   string // why it is in memory, for the console's alarms
}

// Find returns the device named by param (a path, or PARTLABEL=NAME), or the partition
// whose GPT name is label, waiting up to wait for it to appear (drivers probe
// asynchronously).
func Find(sysfs, devDir, param, label string, wait time.Duration) (string, error) {
	if param != "" {
		if name, ok := strings.CutPrefix(param, "PARTLABEL="); ok {
			label, param = name, ""
		} else {
			deadline := time.Now().Add(wait)
			for {
				if _, err := os.Stat(param); err == nil {
					return param, nil
				}
				if time.Now().After(deadline) {
					return "", fmt.Errorf("%s: no such device", param)
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
	}
	deadline := time.Now().Add(wait)
	for {
		if dev := byLabel(sysfs, devDir, label); dev != "" {
			return dev, nil
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no partition named %q", label)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// byLabel scans sysfs's block devices for a partition whose uevent says PARTNAME=label.
func byLabel(sysfs, devDir, label string) string {
	ents, err := os.ReadDir(filepath.Join(sysfs, "class", "block"))
	if err != nil {
		return ""
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysfs, "class", "block", e.Name(), "uevent"))
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			if l == "PARTNAME="+label {
				return filepath.Join(devDir, e.Name())
			}
		}
	}
	return ""
}

// Kind classifies a device's first bytes.
type Kind int

const (
	Blank Kind = iota // all zero: safe to format
	Ext4              // an ext2/3/4 superblock: mount it
	Other             // anything else: never touch it
)

// Classify reads the start of dev.
func Classify(dev string) (Kind, error) {
	f, err := os.Open(dev)
	if err != nil {
		return Other, err
	}
	defer f.Close()
	buf := make([]byte, BlankBytes)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return Other, fmt.Errorf("reading %s: %w", dev, err)
	}
	buf = buf[:n]
	// ext superblock at 1024, magic 0xEF53 at offset 56 of it.
	if len(buf) >= 1024+58 && buf[1024+56] == 0x53 && buf[1024+57] == 0xEF {
		return Ext4, nil
	}
	if len(buf) == 0 || !bytes.Equal(buf, make([]byte, len(buf))) {
		return Other, nil
	}
	return Blank, nil
}

// Options of Prepare.
type Options struct {
	Device string // from Find
	Mount  string // "/perm"
	Mke2fs string // the mke2fs program
	Label  string // file system label
	// Run runs a command to completion (init's reaper-aware runner).
	Run func(cmd *exec.Cmd, timeout time.Duration) ([]byte, error)
}

// Prepare formats Device if blank, and mounts it. On any failure it mounts a tmpfs
// instead and says why in State.Problem; it never formats a device that is not blank.
func Prepare(ctx context.Context, o Options) State {
	st := State{Device: o.Device}
	if err := os.MkdirAll(o.Mount, 0o755); err != nil {
		st.Problem = err.Error()
		return st
	}
	fallback := func(problem string) State {
		st.Problem, st.InMemory = problem, true
		if err := unix.Mount("tmpfs", o.Mount, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=25%"); err != nil {
			st.Problem += fmt.Sprintf("; tmpfs on %s: %v", o.Mount, err)
		}
		return st
	}
	if o.Device == "" {
		return fallback("no persistent data partition: /perm is in memory and lost at reboot")
	}
	kind, err := Classify(o.Device)
	if err != nil {
		return fallback(err.Error())
	}
	switch kind {
	case Other:
		return fallback(fmt.Sprintf("%s holds data that is not an ext4 file system: not formatting it; /perm is in memory (factory reset formats it)", o.Device))
	case Blank:
		out, err := o.Run(exec.CommandContext(ctx, o.Mke2fs, "-q", "-F", "-t", "ext4", "-L", o.Label,
			"-E", "lazy_itable_init=1,lazy_journal_init=1", o.Device), 5*time.Minute)
		if err != nil {
			return fallback(fmt.Sprintf("formatting blank %s: %v: %s", o.Device, err, strings.TrimSpace(string(out))))
		}
		st.Formatted = true
	}
	if err := unix.Mount(o.Device, o.Mount, "ext4", unix.MS_NOATIME|unix.MS_NODEV|unix.MS_NOSUID, ""); err != nil {
		return fallback(fmt.Sprintf("mounting %s (ext4) on %s: %v", o.Device, o.Mount, err))
	}
	return st
}

// Wipe erases the start of dev (its file system signatures) so that the next boot finds
// it blank and formats it: the factory reset.
func Wipe(dev string) error {
	f, err := os.OpenFile(dev, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, BlankBytes)); err != nil {
		return fmt.Errorf("wiping %s: %w", dev, err)
	}
	return f.Sync()
}
