package kmod

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseModinfo(t *testing.T) {
	sec := []byte("license=GPL\x00depends=jbd2,mbcache,crc16\x00softdep=pre: crypto-crc32c\x00alias=fs-ext4\x00alias=ext3\x00name=ext4\x00vermagic=6.1.0-56-amd64 SMP preempt mod_unload modversions \x00")
	in, err := ParseModinfo(sec)
	if err != nil {
		t.Fatal(err)
	}
	want := Info{Name: "ext4", Depends: []string{"jbd2", "mbcache", "crc16"}, SoftPre: []string{"crypto-crc32c"},
		Aliases: []string{"fs-ext4", "ext3"}, Vermagic: "6.1.0-56-amd64 SMP preempt mod_unload modversions"}
	if !reflect.DeepEqual(in, want) {
		t.Errorf("got %+v\nwant %+v", in, want)
	}
	in, _ = ParseModinfo([]byte("depends=\x00name=pvpanic-mmio\x00softdep=gcm\x00softdep=pre: a b post: c\x00"))
	if in.Name != "pvpanic_mmio" || len(in.Depends) != 0 || !reflect.DeepEqual(in.SoftPre, []string{"a", "b"}) || !reflect.DeepEqual(in.SoftPost, []string{"c"}) {
		t.Errorf("%+v", in)
	}
}

func TestParseBuiltin(t *testing.T) {
	set := ParseBuiltin([]byte("kernel/lib/crc32.ko\nkernel/drivers/misc/pvpanic-core.ko\n\n"))
	if !set["crc32"] || !set["pvpanic_core"] || len(set) != 2 {
		t.Errorf("%v", set)
	}
}

// fakeTree is a Tree with metadata filled in, no files.
func fakeTree(mods map[string]Info, builtin ...string) *Tree {
	t := &Tree{Release: "test", paths: map[string]string{}, builtin: map[string]bool{}, infos: map[string]Info{}, aliases: map[string][]string{}}
	for name, in := range mods {
		in.Name = name
		in.Path = "kernel/" + name + ".ko"
		t.paths[name] = in.Path
		t.infos[name] = in
		for _, a := range in.Aliases {
			t.aliases[a] = append(t.aliases[a], name)
		}
	}
	for _, b := range builtin {
		t.builtin[b] = true
	}
	return t
}

func names(ms []Module) string {
	var s []string
	for _, m := range ms {
		n := m.Name
		if m.Optional {
			n = "?" + n
		}
		s = append(s, n)
	}
	return strings.Join(s, " ")
}

func TestResolveOrder(t *testing.T) {
	tr := fakeTree(map[string]Info{
		"virtio_ring": {}, "virtio": {Depends: []string{"virtio_ring"}},
		"virtio_pci":            {Depends: []string{"virtio_ring", "virtio_pci_modern_dev", "virtio"}},
		"virtio_pci_modern_dev": {},
		"virtio_blk":            {Depends: []string{"virtio", "virtio_ring"}},
		"ext4":                  {Depends: []string{"jbd2", "mbcache", "crc16"}, SoftPre: []string{"crypto-crc32c"}},
		"jbd2":                  {SoftPre: []string{"crypto-crc32c"}},
		"mbcache":               {}, "crc16": {},
		"crc32c_generic": {Aliases: []string{"crypto-crc32c", "crc32c"}},
		"crc32c_intel":   {Aliases: []string{"crypto-crc32c", "crc32c"}},
	}, "pvpanic")
	res, err := tr.Resolve([]string{"virtio-pci", "virtio_blk", "ext4", "pvpanic"})
	if err != nil {
		t.Fatal(err)
	}
	want := "virtio_ring virtio_pci_modern_dev virtio virtio_pci virtio_blk ?crc32c_generic ?crc32c_intel jbd2 mbcache crc16 ext4"
	if got := names(res.Load); got != want {
		t.Errorf("load order\n got %s\nwant %s", got, want)
	}
	if !reflect.DeepEqual(res.Builtin, []string{"pvpanic"}) {
		t.Errorf("builtin %v", res.Builtin)
	}
	// Every module comes after its dependencies.
	pos := map[string]int{}
	for i, m := range res.Load {
		pos[m.Name] = i
	}
	for _, m := range res.Load {
		in, _ := tr.Info(m.Name)
		for _, d := range in.Depends {
			if pos[d] > pos[m.Name] {
				t.Errorf("%s loaded before its dependency %s", m.Name, d)
			}
		}
	}
	// Asking for a softdep explicitly makes it required.
	res, err = tr.Resolve([]string{"crc32c_generic", "ext4"})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(res.Load); got != "crc32c_generic ?crc32c_intel jbd2 mbcache crc16 ext4" {
		t.Errorf("got %s", got)
	}
}

func TestResolveErrors(t *testing.T) {
	tr := fakeTree(map[string]Info{
		"a": {Depends: []string{"b"}}, "b": {Depends: []string{"c"}}, "c": {Depends: []string{"a"}},
		"d": {Depends: []string{"missing"}},
		"e": {SoftPre: []string{"no-such-alias"}},
	})
	if _, err := tr.Resolve([]string{"a"}); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: %v", err)
	}
	if _, err := tr.Resolve([]string{"d"}); err == nil || !strings.Contains(err.Error(), "missing (needed by d)") {
		t.Errorf("missing dependency: %v", err)
	}
	if _, err := tr.Resolve([]string{"nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("missing module: %v", err)
	}
	if res, err := tr.Resolve([]string{"e"}); err != nil || names(res.Load) != "e" {
		t.Errorf("missing softdep must be ignored: %v %v", res, err)
	}
}
