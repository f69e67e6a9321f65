package virt

import (
	"regexp"
	"strings"
	"testing"
)

func spec() Spec {
	return Spec{Name: "ws-a1b2c3d4e5", Owner: "host-0123", Type: "qemu", VCPUs: 1, MemoryMiB: 256,
		Kernel: "/img/vmlinux", Initrd: "/img/initrd.img", Cmdline: "console=ttyS0",
		RootVolume: "/v/root.qcow2", UserVolume: "/v/user.qcow2",
		Management: NIC{Bridge: "br-mgmt"}, Primary: NIC{Bridge: "br-primary"},
		VNCSocket: "/r/vnc.sock", AgentSocket: "/r/agent.sock", SerialLog: "/r/serial.log"}
}

// TestDomainPromises checks the definition itself; the VM tests in hostd/controller read
// the same properties back from libvirt.
func TestDomainPromises(t *testing.T) {
	x, err := DomainXML(spec())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`<source type="memfd">`, `<access mode="shared">`, `<nosharepages>`, `dumpCore="off"`,
		`<on_crash>destroy</on_crash>`, `<suspend-to-mem enabled="no">`, `<suspend-to-disk enabled="no">`,
		`name="vmx"`, `name="svm"`, `<graphics type="vnc" socket="/r/vnc.sock"`, `<panic model="isa">`,
		`<tb-cache unit="MiB">64</tb-cache>`, `<deskhost:owner xmlns:deskhost="urn:deskhost:hostd:1">host-0123</deskhost:owner>`,
		`name="org.deskhost.agent.0"`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %s", want)
		}
	}
	for _, never := range []string{"<discard", "autoport", "listen="} {
		if strings.Contains(x, never) {
			t.Errorf("domain XML has %s", never)
		}
	}
	if strings.Index(x, `bridge="br-mgmt"`) > strings.Index(x, `bridge="br-primary"`) {
		t.Error("the management NIC must come first (guest eth0)")
	}
}

func TestDomainNICs(t *testing.T) {
	s := spec()
	s.Management = NIC{Tap: "wsm-a1b2c3d4e5", MAC: "02:d5:00:00:00:01"}
	s.Primary = NIC{Tap: "wsp-a1b2c3d4e5", MAC: "02:d5:00:00:00:02"}
	x, err := DomainXML(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<interface type="ethernet">`, `<target dev="wsm-a1b2c3d4e5" managed="no">`,
		`<target dev="wsp-a1b2c3d4e5" managed="no">`, `address="02:d5:00:00:00:01"`} {
		if !strings.Contains(x, want) {
			t.Errorf("tap NICs: XML lacks %s", want)
		}
	}
	s.Primary = NIC{Tap: "t", Bridge: "b"}
	if _, err := Domain(s); err == nil {
		t.Error("a NIC with both a tap and a bridge was accepted")
	}
	s = spec()
	s.MemoryMiB = 32
	if _, err := Domain(s); err == nil {
		t.Error("32 MiB accepted")
	}
	m1, p1 := MACs("ws-a1b2c3d4e5")
	m2, _ := MACs("ws-a1b2c3d4e5")
	if m1 != m2 || m1 == p1 {
		t.Errorf("MACs not stable or not distinct: %s %s %s", m1, m2, p1)
	}
}

// TestDomainConfinement: hugepage RAM, qemu's unprivileged label with relabelling off, and
// the cgroup limits appear as libvirt expects them; without them the XML has none.
func TestDomainConfinement(t *testing.T) {
	s := spec()
	x, err := DomainXML(s)
	if err != nil {
		t.Fatal(err)
	}
	for _, never := range []string{"<hugepages>", "<seclabel", "<cputune>", "<memtune>"} {
		if strings.Contains(x, never) {
			t.Errorf("default domain XML has %s", never)
		}
	}
	s.VCPUs, s.HugePages, s.RunAs, s.Limits = 2, true, "+999:+995", true
	if x, err = DomainXML(s); err != nil {
		t.Fatal(err)
	}
	x = regexp.MustCompile(`>\s+<`).ReplaceAllString(x, "><")
	for _, want := range []string{
		`<hugepages><page size="2048" unit="KiB"></page></hugepages>`, `<source type="memfd">`, `<access mode="shared">`,
		`<seclabel type="static" model="dac" relabel="no"><label>+999:+995</label></seclabel>`,
		`<global_period>100000</global_period><global_quota>200000</global_quota>`,
		// hugetlb RAM is not charged to the memory controller: qemu's overhead and TCG cache only.
		`<hard_limit unit="MiB">576</hard_limit>`,
	} {
		if !strings.Contains(x, want) {
			t.Errorf("confined domain XML lacks %s\n%s", want, x)
		}
	}
	s.HugePages = false
	if got := s.MemoryLimitMiB(); got != 256+QemuOverheadMiB+TCGCacheMiB {
		t.Errorf("memory limit of 4 KiB-page RAM: %d MiB, want RAM + overhead + TCG cache", got)
	}
	s.HugePages, s.MemoryMiB = true, 257
	if _, err := Domain(s); err == nil || !strings.Contains(err.Error(), "2 MiB pages") {
		t.Errorf("odd MiB of hugepage RAM: %v", err)
	}
}

// Clipboard redirection is on unless the spec turns it off: a qemu-vdagent channel with
// copy/paste, on the spice agent's port.
func TestDomainClipboard(t *testing.T) {
	x, err := DomainXML(spec())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`<channel type="qemu-vdagent">`, `<clipboard copypaste="yes">`, `name="com.redhat.spice.0"`} {
		if !strings.Contains(x, want) {
			t.Errorf("domain XML lacks %s", want)
		}
	}
	s := spec()
	s.NoClipboard = true
	if x, _ = DomainXML(s); strings.Contains(x, "qemu-vdagent") || strings.Contains(x, "com.redhat.spice.0") {
		t.Errorf("NoClipboard: the domain still has the clipboard channel")
	}
}

// An isolated domain (an imported image's test boot) has no NIC at all.
func TestIsolatedDomainHasNoNIC(t *testing.T) {
	s := Spec{Name: "wsi-test00001", VCPUs: 1, MemoryMiB: 256, Kernel: "/k", RootVolume: "/r", UserVolume: "/u", Isolated: true}
	d, err := Domain(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Devices.Interfaces) != 0 {
		t.Errorf("isolated domain has %d NICs", len(d.Devices.Interfaces))
	}
	s.Isolated = false
	if _, err := Domain(s); err == nil {
		t.Error("a domain without NICs or isolation was accepted")
	}
}
