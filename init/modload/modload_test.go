package modload

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"deskhost/internal/modindex"
)

func TestModaliases(t *testing.T) {
	sys := t.TempDir()
	for p, a := range map[string]string{
		"devices/pci0000:00/0000:00:02.0/modalias":         "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"devices/pci0000:00/0000:00:02.0/virtio0/modalias": "virtio:d00000001v00001AF4",
		"devices/pci0000:00/0000:00:03.0/modalias":         "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00",
		"devices/system/cpu/modalias":                      "cpu:type:x86,ven0002fam0017mod0031:feature:,0000,0001",
	} {
		f := filepath.Join(sys, p)
		os.MkdirAll(filepath.Dir(f), 0o755)
		os.WriteFile(f, []byte(a+"\n"), 0o644)
	}
	got := Modaliases(sys)
	want := []string{"cpu:type:x86,ven0002fam0017mod0031:feature:,0000,0001",
		"pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", "virtio:d00000001v00001AF4"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%q", got)
	}
	ix := &modindex.Index{Modules: map[string]*modindex.Module{
		"virtio_net": {Name: "virtio_net", Path: "n.ko", Aliases: []string{"virtio:d00000001v*"}},
		"virtio_pci": {Name: "virtio_pci", Path: "p.ko", Aliases: []string{"pci:v00001AF4d*sv*sd*bc*sc*i*"}},
	}}
	var mods []string
	for _, a := range got {
		mods = append(mods, ix.Resolve(a)...)
	}
	if !reflect.DeepEqual(mods, []string{"virtio_pci", "virtio_net"}) {
		t.Errorf("matched %v", mods)
	}
}

func TestModprobeUsage(t *testing.T) {
	if ModprobeMain(nil) != 1 || ModprobeMain([]string{"-q"}) != 1 {
		t.Error("modprobe without a module name succeeded")
	}
}
