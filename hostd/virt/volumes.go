package virt

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/digitalocean/go-libvirt"
	"libvirt.org/go/libvirtxml"
)

// EnsurePool makes sure a running directory storage pool name exists at dir. WorkSpace
// volumes live there, so that libvirt itself can list and account for them. The directory
// is 0711: an unprivileged qemu must reach the volume handed to it, but not list the others.
func (c *Conn) EnsurePool(name, dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	if err := os.Chmod(dir, 0o711); err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	p, err := c.l.StoragePoolLookupByName(name)
	if isErr(err, libvirt.ErrNoStoragePool) {
		x, merr := (&libvirtxml.StoragePool{Type: "dir", Name: name, Target: &libvirtxml.StoragePoolTarget{Path: dir,
			Permissions: &libvirtxml.StoragePoolTargetPermissions{Mode: "0711"}}}).Marshal()
		if merr != nil {
			return merr
		}
		if p, err = c.l.StoragePoolDefineXML(x, 0); err != nil {
			return fmt.Errorf("define pool %s at %s: %w", name, dir, err)
		}
		_ = c.l.StoragePoolSetAutostart(p, 1)
	} else if err != nil {
		return fmt.Errorf("look up pool %s: %w", name, err)
	}
	state, _, _, _, err := c.l.StoragePoolGetInfo(p)
	if err != nil {
		return fmt.Errorf("pool %s: %w", name, err)
	}
	if libvirt.StoragePoolState(state) != libvirt.StoragePoolRunning {
		if err := c.l.StoragePoolCreate(p, 0); err != nil {
			return fmt.Errorf("start pool %s: %w", name, err)
		}
	}
	if err := c.l.StoragePoolRefresh(p, 0); err != nil {
		return fmt.Errorf("refresh pool %s: %w", name, err)
	}
	return nil
}

// Volume is a volume in the pool.
type Volume struct {
	Name        string
	Path        string
	CapacityGiB uint64
	Backing     string // the file a copy-on-write volume reads through to, if any
	Encrypted   bool   // qcow2 with LUKS encryption (secrets.go)
}

// CreateVolume creates a thin qcow2 volume of capacityGiB (logical size: a qcow2 costs only
// what is written). With backing set, the volume is a copy-on-write child of that qcow2
// image. An existing volume of that name is returned as it is, so creation is idempotent.
func (c *Conn) CreateVolume(pool, name string, capacityGiB int, backing string) (Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s: pool %s: %w", name, pool, err)
	}
	if v, err := c.l.StorageVolLookupByName(p, name); err == nil {
		return c.volume(v)
	}
	qcow2 := &libvirtxml.StorageVolumeTargetFormat{Type: "qcow2"}
	sv := libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Unit: "GiB", Value: uint64(capacityGiB)},
		// Thin: nothing is allocated up front.
		Allocation: &libvirtxml.StorageVolumeSize{Unit: "B", Value: 0},
		Target:     &libvirtxml.StorageVolumeTarget{Format: qcow2},
	}
	if backing != "" {
		sv.BackingStore = &libvirtxml.StorageVolumeBackingStore{Path: backing, Format: qcow2}
	}
	x, err := sv.Marshal()
	if err != nil {
		return Volume{}, err
	}
	v, err := c.l.StorageVolCreateXML(p, x, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("create volume %s (%d GiB): %w", name, capacityGiB, err)
	}
	return c.volume(v)
}

// DeleteVolume deletes a volume; a missing one is not an error.
func (c *Conn) DeleteVolume(pool, name string) error {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return fmt.Errorf("delete volume %s: pool %s: %w", name, pool, err)
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if isErr(err, libvirt.ErrNoStorageVol) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete volume %s: %w", name, err)
	}
	if err := c.l.StorageVolDelete(v, 0); err != nil {
		return fmt.Errorf("delete volume %s: %w", name, err)
	}
	return nil
}

// Volumes lists the pool's volumes whose names start with prefix.
func (c *Conn) Volumes(pool, prefix string) ([]Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return nil, fmt.Errorf("list volumes: pool %s: %w", pool, err)
	}
	// No refresh here: it fails while a volume is being created, and every volume hostd
	// makes goes through libvirt. EnsurePool refreshes once at start.
	vs, _, err := c.l.StoragePoolListAllVolumes(p, 1, 0)
	if err != nil {
		return nil, fmt.Errorf("list volumes of pool %s: %w", pool, err)
	}
	var out []Volume
	for _, v := range vs {
		if !strings.HasPrefix(v.Name, prefix) {
			continue
		}
		vol, err := c.volume(v)
		if isErr(err, libvirt.ErrNoStorageVol) {
			continue // deleted, or still being created, since the listing
		}
		if err != nil {
			return nil, err
		}
		out = append(out, vol)
	}
	return out, nil
}

func (c *Conn) volume(v libvirt.StorageVol) (Volume, error) {
	x, err := c.l.StorageVolGetXMLDesc(v, 0)
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	var sv libvirtxml.StorageVolume
	if err := sv.Unmarshal(x); err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	vol := Volume{Name: v.Name}
	if sv.Target != nil {
		vol.Path = sv.Target.Path
		vol.Encrypted = sv.Target.Encryption != nil
	}
	if sv.Capacity != nil {
		vol.CapacityGiB = sv.Capacity.Value >> 30 // libvirt reports bytes
	}
	if sv.BackingStore != nil {
		vol.Backing = sv.BackingStore.Path
	}
	return vol, nil
}

func isErr(err error, code libvirt.ErrorNumber) bool {
	var e libvirt.Error
	return errors.As(err, &e) && e.Code == uint32(code)
}

// DestroyPool stops and undefines a storage pool (its files stay). For tests.
func (c *Conn) DestroyPool(name string) error {
	p, err := c.l.StoragePoolLookupByName(name)
	if err != nil {
		return nil
	}
	_ = c.l.StoragePoolDestroy(p)
	return c.l.StoragePoolUndefine(p)
}

// GrowVolume grows a volume of the pool to capacityGiB (logical size) while no guest uses
// it: libvirt runs qemu-img resize, or, for a LUKS-encrypted volume, qemu-img itself with
// passphrase (through a pipe, as CreateEncryptedVolume). A volume already that large is
// left alone, so the call is safe to repeat; it never shrinks one.
func (c *Conn) GrowVolume(pool, name string, capacityGiB int, passphrase []byte) (Volume, error) {
	p, err := c.l.StoragePoolLookupByName(pool)
	if err != nil {
		return Volume{}, fmt.Errorf("grow volume %s: pool %s: %w", name, pool, err)
	}
	v, err := c.l.StorageVolLookupByName(p, name)
	if err != nil {
		return Volume{}, fmt.Errorf("grow volume %s: %w", name, err)
	}
	vol, err := c.volume(v)
	if err != nil || vol.CapacityGiB >= uint64(capacityGiB) {
		return vol, err
	}
	if vol.Encrypted {
		if len(passphrase) == 0 {
			return Volume{}, fmt.Errorf("grow volume %s: it is encrypted and no passphrase was given", name)
		}
		if err := runWithSecret(passphrase, "qemu-img", "resize", "-q", "--object", "secret,id=sec0,file=/dev/fd/3", "--image-opts",
			"driver=qcow2,file.filename="+strings.ReplaceAll(vol.Path, ",", ",,")+",encrypt.key-secret=sec0", fmt.Sprintf("%dG", capacityGiB)); err != nil {
			return Volume{}, fmt.Errorf("grow volume %s to %d GiB: %w", name, capacityGiB, err)
		}
		return c.volume(v)
	}
	if err := c.l.StorageVolResize(v, uint64(capacityGiB)<<30, 0); err != nil {
		return Volume{}, fmt.Errorf("grow volume %s to %d GiB: %w", name, capacityGiB, err)
	}
	return c.volume(v)
}

// GrowDisk grows the disk of a running domain backed by the file path to capacityGiB,
// online (libvirt's block resize: qemu grows the qcow2 and tells the guest, whose kernel
// sees the new capacity at once). A disk already that large is left alone. It returns the
// disk's capacity in bytes.
func (c *Conn) GrowDisk(domain, path string, capacityGiB int) (uint64, error) {
	d, err := c.l.DomainLookupByName(domain)
	if err != nil {
		return 0, fmt.Errorf("grow disk %s of %s: %w", path, domain, err)
	}
	want := uint64(capacityGiB) << 30
	_, capacity, _, err := c.l.DomainGetBlockInfo(d, path, 0)
	if err != nil {
		return 0, fmt.Errorf("grow disk %s of %s: %w", path, domain, err)
	}
	if capacity >= want {
		return capacity, nil
	}
	if err := c.l.DomainBlockResize(d, path, want, libvirt.DomainBlockResizeBytes); err != nil {
		return 0, fmt.Errorf("grow disk %s of %s to %d GiB: %w", path, domain, capacityGiB, err)
	}
	return want, nil
}
