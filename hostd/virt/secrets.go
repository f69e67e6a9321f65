package virt

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// Encrypted volumes are qcow2 files with LUKS encryption (qemu's encrypt.format=luks):
// their clusters are written through AES-256-XTS, whatever backing file they read through
// to. The passphrase is a libvirt secret, one per volume path, that is ephemeral (libvirtd
// keeps it in memory only, never under /etc/libvirt/secrets) and private (nobody reads it
// back through libvirt); hostd defines it again before every use, after a libvirtd
// restart too, and removes it with the volume.

// VolumeSecretUUID is the UUID of the secret of the volume at path: derived from the path,
// so that every definition of it is the same secret.
func VolumeSecretUUID(path string) string {
	h := sha256.Sum256([]byte("deskhost volume secret\x00" + path))
	h[6] = h[6]&0x0f | 0x50 // a name-based UUID
	h[8] = h[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", h[0:4], h[4:6], h[6:8], h[8:10], h[10:16])
}

// DefineVolumeSecret makes (or refreshes) the secret holding the passphrase of the volume
// at path, and returns its UUID.
func (c *Conn) DefineVolumeSecret(path string, passphrase []byte) (string, error) {
	uuid := VolumeSecretUUID(path)
	x, err := (&libvirtxml.Secret{Ephemeral: "yes", Private: "yes", UUID: uuid,
		Description: "deskhost volume " + path,
		Usage:       &libvirtxml.SecretUsage{Type: "volume", Volume: path}}).Marshal()
	if err != nil {
		return "", err
	}
	s, err := c.l.SecretDefineXML(x, 0)
	if err != nil {
		return "", fmt.Errorf("define the secret of volume %s: %w", path, err)
	}
	if err := c.l.SecretSetValue(s, passphrase, 0); err != nil {
		return "", fmt.Errorf("set the secret of volume %s: %w", path, err)
	}
	return uuid, nil
}

// UndefineVolumeSecret removes the secret of the volume at path; a missing one is not an
// error.
func (c *Conn) UndefineVolumeSecret(path string) error {
	s, err := c.l.SecretLookupByUsage(int32(libvirt.SecretUsageTypeVolume), path)
	if isErr(err, libvirt.ErrNoSecret) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up the secret of volume %s: %w", path, err)
	}
	if err := c.l.SecretUndefine(s); err != nil && !isErr(err, libvirt.ErrNoSecret) {
		return fmt.Errorf("remove the secret of volume %s: %w", path, err)
	}
	return nil
}

// HasVolumeSecret reports whether the secret of the volume at path is defined.
func (c *Conn) HasVolumeSecret(path string) (bool, error) {
	_, err := c.l.SecretLookupByUsage(int32(libvirt.SecretUsageTypeVolume), path)
	if isErr(err, libvirt.ErrNoSecret) {
		return false, nil
	}
	return err == nil, err
}

// LUKSIterTimeMs is the time LUKS's PBKDF2 is set to take (qemu's encrypt.iter-time): the
// cost of every open of an encrypted volume, at every boot. The stretching guards weak
// passphrases; hostd's are 256 random bits, so it buys nothing, and qemu's default
// (2000 ms per volume, measured 2.4 s of CPU per open here) would only slow every boot.
const LUKSIterTimeMs = 10

// CreateEncryptedVolume is CreateVolume for a qcow2 volume with LUKS encryption under
// passphrase. libvirt's volume XML cannot set LUKS's iter-time, so qemu-img creates it
// (the passphrase through a pipe, never a file or the command line), beside the pool under
// a hidden name renamed into place, and the pool is refreshed for libvirt to list it.
func (c *Conn) CreateEncryptedVolume(pool, name string, capacityGiB int, backing string, passphrase []byte) (Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: pool %s: %w", name, pool, err)
	}
	if v, err := c.l.StorageVolLookupByName(p, name); err == nil {
		return c.volume(v)
	}
	px, err := c.l.StoragePoolGetXMLDesc(p, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: pool %s: %w", name, pool, err)
	}
	var sp libvirtxml.StoragePool
	if err := sp.Unmarshal(px); err != nil || sp.Target == nil || sp.Target.Path == "" {
		return Volume{}, fmt.Errorf("create volume %s: pool %s has no directory (%v)", name, pool, err)
	}
	final := filepath.Join(sp.Target.Path, name)
	if _, err := os.Stat(final); errors.Is(err, os.ErrNotExist) {
		tmp := filepath.Join(sp.Target.Path, ".new-"+name)
		if err := qemuImgCreateLUKS(tmp, capacityGiB, backing, passphrase); err != nil {
			return Volume{}, fmt.Errorf("create volume %s (%d GiB): %w", name, capacityGiB, err)
		}
		if err := os.Rename(tmp, final); err != nil {
			os.Remove(tmp)
			return Volume{}, fmt.Errorf("create volume %s: %w", name, err)
		}
	} else if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	// A refresh fails while libvirt creates another volume in the pool: try again.
	for attempt := 0; ; attempt++ {
		if err = c.l.StoragePoolRefresh(p, 0); err == nil || attempt == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: refresh pool %s: %w", name, pool, err)
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: %w", name, err)
	}
	return c.volume(v)
}

func qemuImgCreateLUKS(path string, capacityGiB int, backing string, passphrase []byte) error {
	opts := fmt.Sprintf("encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=%d", LUKSIterTimeMs)
	if backing != "" {
		opts += ",backing_file=" + strings.ReplaceAll(backing, ",", ",,") + ",backing_fmt=qcow2"
	}
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		os.Remove(path)
		if err = runWithSecret(passphrase, "qemu-img", "create", "-q", "-f", "qcow2",
			"--object", "secret,id=sec0,file=/dev/fd/3", "-o", opts, path, fmt.Sprintf("%dG", capacityGiB)); err == nil {
			return os.Chmod(path, 0o600)
		}
		os.Remove(path)
		// qemu-img times LUKS's PBKDF2 by the thread's CPU time; on some machines a
		// measure reads 0 ms and it gives up ("Unable to get accurate CPU usage"), about
		// once in four creations here. Another try succeeds.
		if !strings.Contains(err.Error(), "Unable to get accurate CPU usage") {
			return err
		}
	}
	return err
}

// runWithSecret runs a command with secret readable on its fd 3 (a pipe).
func runWithSecret(secret []byte, name string, args ...string) error {
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	go func() {
		w.Write(secret)
		w.Close()
	}()
	cmd := exec.Command(name, args...)
	cmd.ExtraFiles = []*os.File{r}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func diskEncryption(secretUUID string) *libvirtxml.DomainDiskEncryption {
	return &libvirtxml.DomainDiskEncryption{Format: "luks", Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: secretUUID}}}
}
