package modindex

import (
	"reflect"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		pat, s string
		want   bool
	}{
		{"pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", true},
		{"pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d0000100Fsv00001AF4sd00001100bc02sc00i00", false},
		{"virtio:d00000001v*", "virtio:d00000001v00001AF4", true},
		{"cpu:type:x86,ven*fam*mod*:feature:*0085*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0085,0089", true},
		{"fs-vfat", "fs-vfat", true},
		{"a?c", "abc", true},
		{"a[0-9]c", "a5c", true},
		{"a[!0-9]c", "a5c", false},
		{"usb:v*p*d*dc*dsc*dp*ic09isc*ip*in*", "usb:v1D6Bp0002d0601dc09dsc00dp01ic09isc00ip00in00", true},
		{"*", "", true},
		{"x*", "", false},
		{"of:N*T*Cfoo/bar", "of:NxTyCfoo/bar", true},
	} {
		if got := Match(tc.pat, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v", tc.pat, tc.s, got)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	ix := &Index{Modules: map[string]*Module{
		"ext4":     {Name: "ext4", Path: "kernel/fs/ext4/ext4.ko", Depends: []string{"jbd2", "mbcache"}, Aliases: []string{"fs-ext4"}, SoftPre: []string{"crypto-crc32c"}},
		"jbd2":     {Name: "jbd2", Path: "kernel/fs/jbd2/jbd2.ko", Depends: []string{"crc16"}},
		"mbcache":  {Name: "mbcache", Path: "kernel/fs/mbcache.ko"},
		"crc16":    {Name: "crc16", Path: "kernel/lib/crc16.ko"},
		"crc32c_g": {Name: "crc32c_g", Path: "kernel/crypto/crc32c_g.ko", Aliases: []string{"crypto-crc32c"}},
	}, Load: []string{"ext4"}}
	files := ix.Write()
	if !strings.Contains(string(files[DepFile]), "kernel/fs/ext4/ext4.ko: ") {
		t.Fatalf("modules.dep:\n%s", files[DepFile])
	}
	back, err := Parse(files)
	if err != nil {
		t.Fatal(err)
	}
	order := back.LoadOrder("ext4")
	pos := map[string]int{}
	for i, n := range order {
		pos[n] = i
	}
	if order[len(order)-1] != "ext4" || pos["crc16"] > pos["jbd2"] || pos["crc32c_g"] > pos["ext4"] {
		t.Errorf("load order %v", order)
	}
	if got := back.Resolve("fs-ext4"); !reflect.DeepEqual(got, []string{"ext4"}) {
		t.Errorf("Resolve(fs-ext4) = %v", got)
	}
	if got := back.Resolve("nothing"); got != nil {
		t.Errorf("Resolve(nothing) = %v", got)
	}
	if !reflect.DeepEqual(back.Load, []string{"ext4"}) {
		t.Errorf("load list %v", back.Load)
	}
	if _, err := Parse(map[string][]byte{DepFile: []byte("kernel/a.ko: kernel/missing.ko\n")}); err == nil {
		t.Error("a dependency outside the index was accepted")
	}
}
