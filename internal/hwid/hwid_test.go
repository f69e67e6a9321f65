package hwid

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func sysWithUUID(t *testing.T, uuid string) string {
	t.Helper()
	root := t.TempDir()
	p := filepath.Join(root, DMIPath)
	os.MkdirAll(filepath.Dir(p), 0o755)
	if uuid != "" {
		os.WriteFile(p, []byte(uuid+"\n"), 0o400)
	}
	return root
}

func TestRead(t *testing.T) {
	mac, _ := net.ParseMAC("52:54:00:AB:CD:EF")
	id, err := Read(sysWithUUID(t, "4C4C4544-0042-3510-8052-B4C04F565931"), mac)
	if err != nil || id.String() != "dmi-uuid:4c4c4544-0042-3510-8052-b4c04f565931" {
		t.Errorf("DMI UUID: %v %v", id, err)
	}
	for _, placeholder := range []string{"", "00000000-0000-0000-0000-000000000000", "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF", "03000200-0400-0500-0006-000700080009", "Not Settable"} {
		id, err := Read(sysWithUUID(t, placeholder), mac)
		if err != nil || id.String() != "mac:52:54:00:ab:cd:ef" {
			t.Errorf("UUID %q: %v %v, want the management MAC", placeholder, id, err)
		}
	}
	if _, err := Read(sysWithUUID(t, ""), nil); err == nil {
		t.Error("no UUID and no MAC gave an identity")
	}
	// The real machine's: whatever it is, it parses back.
	if id, err := Read("/sys", mac); err != nil {
		t.Error(err)
	} else if back, err := ParseID(id.String()); err != nil || back != id {
		t.Errorf("%v does not parse back: %v %v", id, back, err)
	}
}

func TestOverrides(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "overrides.yaml")
	id := ID{KindDMI, "4c4c4544-0042-3510-8052-b4c04f565931"}
	if o, err := LoadOverrides(p, id); o != nil || err != nil {
		t.Fatalf("no file: %v %v", o, err)
	}
	o := &Overrides{HardwareID: id.String(), Hostname: "rack3-u12", Management: NIC{MAC: "3c:ec:ef:01:02:03"}, Primary: NIC{Name: "enp65s0f1"}}
	if err := WriteOverrides(p, o); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o", st.Mode().Perm())
	}
	got, err := LoadOverrides(p, id)
	if err != nil || *got != *o {
		t.Fatalf("read back: %+v %v", got, err)
	}
	other := ID{KindMAC, "52:54:00:00:00:01"}
	if got, err := LoadOverrides(p, other); got != nil || err == nil || !strings.Contains(err.Error(), "ignored") {
		t.Errorf("another host's overrides: %v %v", got, err)
	}
	for b, want := range map[string]string{
		"hardwareId: mac:52:54:00:00:00:01\nhostnme: x\n":                                      "field hostnme not found",
		"hardwareId: serial:123\n":                                                             "hardwareId",
		"hardwareId: mac:52:54:00:00:00:01\nhostname: Bad_Name\n":                              "hostname",
		"hardwareId: mac:52:54:00:00:00:01\nmanagement: {mac: 52:54}\n":                        "management.mac",
		"hardwareId: mac:52:54:00:00:00:01\nprimary: {name: a/b}\n":                            "primary.name",
		"hardwareId: mac:52:54:00:00:00:01\nmanagement: {name: eth0}\nprimary: {name: eth0}\n": "same NIC",
		"hardwareId: dmi-uuid:00000000-0000-0000-0000-000000000000\n":                          "hardwareId",
	} {
		if _, err := ParseOverrides([]byte(b)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", b, err, want)
		}
	}
	if err := WriteOverrides(p, &Overrides{HardwareID: "x"}); err == nil {
		t.Error("wrote invalid overrides")
	}
}

// FuzzParseOverrides: the loader never panics, and what it accepts is valid and survives
// a write and a read.
func FuzzParseOverrides(f *testing.F) {
	f.Add([]byte("hardwareId: mac:52:54:00:00:00:01\nhostname: h1\nmanagement: {mac: \"52:54:00:00:00:01\"}\n"))
	f.Add([]byte("hardwareId: dmi-uuid:4c4c4544-0042-3510-8052-b4c04f565931\nprimary: {name: eth1}\n"))
	f.Add([]byte("hardwareId: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOverrides(b)
		if err != nil {
			return
		}
		if err := o.Validate(); err != nil {
			t.Fatalf("accepted but invalid: %v", err)
		}
		p := filepath.Join(t.TempDir(), "o.yaml")
		if err := WriteOverrides(p, o); err != nil {
			t.Fatalf("accepted but not writable: %v", err)
		}
		id, _ := ParseID(o.HardwareID)
		back, err := LoadOverrides(p, id)
		if err != nil || *back != *o {
			t.Fatalf("round trip: %+v -> %+v %v", o, back, err)
		}
	})
}
