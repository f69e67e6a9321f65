package virt

import (
	"fmt"
	"path/filepath"

	"github.com/digitalocean/go-libvirt"
)

// ManagedSave saves a running (or paused) domain's state — its RAM and devices — to
// libvirt's managed save image and stops its qemu. The next Start or StartPaused restores
// the guest from it, as it was.
func (c *Conn) ManagedSave(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("save domain %s: %w", name, err)
	}
	if err := c.l.DomainManagedSave(d, 0); err != nil {
		return fmt.Errorf("save domain %s: %w", name, err)
	}
	return nil
}

// HasManagedSave reports whether the domain has a managed save image (a missing domain
// has none).
func (c *Conn) HasManagedSave(name string) (bool, error) {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("saved state of domain %s: %w", name, err)
	}
	n, err := c.l.DomainHasManagedSaveImage(d, 0)
	if err != nil {
		return false, fmt.Errorf("saved state of domain %s: %w", name, err)
	}
	return n == 1, nil
}

// RemoveManagedSave deletes the domain's managed save image, if any (libvirt unlinks it:
// a caller that must scrub it holds it open first).
func (c *Conn) RemoveManagedSave(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if libvirt.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove saved state of domain %s: %w", name, err)
	}
	if err := c.l.DomainManagedSaveRemove(d, 0); err != nil {
		return fmt.Errorf("remove saved state of domain %s: %w", name, err)
	}
	return nil
}

// StartPausedFresh boots a defined domain paused, ignoring (and having libvirt delete)
// its managed save image: a cold boot.
func (c *Conn) StartPausedFresh(name string) error {
	d, err := c.l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	if _, err := c.l.DomainCreateWithFlags(d, uint32(libvirt.DomainStartPaused|libvirt.DomainStartForceBoot)); err != nil {
		return fmt.Errorf("start domain %s: %w", name, err)
	}
	return nil
}

// ManagedSavePath is where libvirtd keeps name's managed save image, as seen from this
// process (the API does not say).
func (c *Conn) ManagedSavePath(name string) string {
	return filepath.Join(SaveDir(c.socket), name+".save")
}

// SaveDir is the qemu driver's managed save directory of the libvirtd listening on socket.
// The system libvirtd (socket in /run/libvirt) keeps it in /var/lib/libvirt/qemu/save; a
// libvirtd run by scripts/libvirtrun --root DIR has its socket in DIR/run and
// /var/lib/libvirt bind-mounted from DIR/lib.
func SaveDir(socket string) string {
	run := filepath.Dir(socket)
	if run == "/run/libvirt" || run == "/var/run/libvirt" {
		return "/var/lib/libvirt/qemu/save"
	}
	return filepath.Join(filepath.Dir(run), "lib", "qemu", "save")
}
