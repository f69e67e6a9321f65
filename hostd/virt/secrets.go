package virt

import (
	"crypto/sha256"
	"fmt"
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

// CreateEncryptedVolume is CreateVolume for a qcow2 volume with LUKS encryption whose
// passphrase is the secret secretUUID (DefineVolumeSecret).
func (c *Conn) CreateEncryptedVolume(pool, name string, capacityGiB int, backing, secretUUID string) (Volume, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var v Volume
		if v, err = c.createVolume(pool, name, capacityGiB, backing, secretUUID); err == nil {
			return v, nil
		}
		// qemu-img times LUKS's PBKDF2 by the thread's CPU time; on some machines its
		// first measure reads 0 ms and it gives up ("Unable to get accurate CPU usage").
		// Measured here about once in four creations; another try succeeds.
		if !strings.Contains(err.Error(), "Unable to get accurate CPU usage") {
			return Volume{}, err
		}
		time.Sleep(100 * time.Millisecond)
	}
	return Volume{}, err
}

func luksEncryption(secretUUID string) *libvirtxml.StorageEncryption {
	return &libvirtxml.StorageEncryption{Format: "luks", Secret: &libvirtxml.StorageEncryptionSecret{Type: "passphrase", UUID: secretUUID}}
}

func diskEncryption(secretUUID string) *libvirtxml.DomainDiskEncryption {
	return &libvirtxml.DomainDiskEncryption{Format: "luks", Secrets: []libvirtxml.DomainDiskSecret{{Type: "passphrase", UUID: secretUUID}}}
}
