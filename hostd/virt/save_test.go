package virt

import "testing"

func TestSaveDir(t *testing.T) {
	for sock, want := range map[string]string{
		"/run/libvirt/libvirt-sock":              "/var/lib/libvirt/qemu/save",
		"/var/run/libvirt/libvirt-sock":          "/var/lib/libvirt/qemu/save",
		"/run/deskhost/libvirt/run/libvirt-sock": "/run/deskhost/libvirt/lib/qemu/save",
	} {
		if got := SaveDir(sock); got != want {
			t.Errorf("SaveDir(%s) = %s, want %s", sock, got, want)
		}
	}
}
