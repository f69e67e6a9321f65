// Package virt is hostd's side of libvirt: the domain definition of a WorkSpace (built with
// libvirtxml) and the calls that define, start, stop and remove domains and volumes
// (through go-libvirt, libvirt's own RPC protocol, no cgo).
package virt

import (
	"crypto/sha256"
	"encoding/xml"
	"fmt"
	"strings"

	"libvirt.org/go/libvirtxml"
)

// AgentChannel is the virtio-serial port name the guest agent listens on.
const AgentChannel = "org.deskhost.agent.0"

// TCGCacheMiB is the translation cache of a software-emulated guest.
const TCGCacheMiB = 64

// OwnerNamespace is the XML namespace of the metadata element that marks a domain as made
// by a given hostd: hostd only ever removes domains that carry its own mark.
const OwnerNamespace = "urn:deskhost:hostd:1"

// Spec is everything that makes a WorkSpace's domain.
type Spec struct {
	Name      string // the WorkSpace id: one domain per WorkSpace, named after it
	Owner     string // the hostd instance that manages the domain (see OwnerNamespace)
	Type      string // libvirt domain type: "kvm" on real hosts, "qemu" (TCG) where KVM cannot run guests
	VCPUs     int
	MemoryMiB int

	Kernel, Initrd, Cmdline string

	RootVolume, UserVolume string // qcow2 files

	// Management is guest eth0, Primary guest eth1.
	Management, Primary NIC

	VNCSocket   string // the display: a unix socket, never a TCP port
	AgentSocket string // the guest agent's virtio-serial channel
	SerialLog   string // the guest's serial console, appended to a file
}

// NIC is where one guest NIC attaches: a pre-made tap that netcfg owns (managed='no'), or,
// without netcfg, a bridge libvirt adds a tap of its own to.
type NIC struct {
	Tap    string
	Bridge string
	MAC    string // empty: derived from the domain name (MACs)
}

// MACs derives the WorkSpace's two NIC addresses from its id, so a re-definition after a
// crash gives the guest the same addresses. 52:54:00 is qemu's prefix.
func MACs(name string) (management, primary string) {
	h := sha256.Sum256([]byte(name))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2]&0xfe),
		fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2]|0x01)
}

// The NICs' fixed PCI slots: the guest names NICs in slot order, so the management NIC is
// always eth0 and the primary NIC eth1 (guide: "an ENI for management and streaming (eth0)
// and a primary ENI (eth1)").
const (
	managementSlot = 0x03
	primarySlot    = 0x04
)

// Domain builds the libvirt domain for s. Every security-relevant choice is here:
//   - RAM is a shared memfd (<source type='memfd'/><access mode='shared'/>), so hostd can
//     hold it through /proc/<qemu>/fd and zero it after the guest is gone. Shared access
//     matters: with private access the guest's writes land in qemu's anonymous copy-on-write
//     pages and the held memfd proves nothing.
//   - <nosharepages/>: KSM never merges guest pages across WorkSpaces.
//   - no <discard/>: it would drop pages unscrubbed and make the held fd read as zero.
//   - dumpCore='off': guest RAM is never written into a qemu core dump.
//   - no vmx/svm in the guest CPU: no nested virtualization (guide §1.11).
//   - suspend-to-mem/disk disabled: a guest cannot sleep on its own (guide §2.9).
//   - on_crash destroy, with a pvpanic device so a guest kernel panic is seen at once.
//   - the display is VNC on a unix socket only; there is no TCP listener.
func Domain(s Spec) (*libvirtxml.Domain, error) {
	if s.Name == "" || s.VCPUs < 1 || s.MemoryMiB < 64 || s.Kernel == "" || s.RootVolume == "" || s.UserVolume == "" {
		return nil, fmt.Errorf("domain spec for %q: name, vcpus, memory ≥ 64 MiB, kernel and both volumes are required", s.Name)
	}
	for _, n := range []NIC{s.Management, s.Primary} {
		if (n.Tap == "") == (n.Bridge == "") {
			return nil, fmt.Errorf("domain spec for %s: each NIC needs a tap or a bridge, not both: %+v", s.Name, n)
		}
	}
	typ := s.Type
	if typ == "" {
		typ = "kvm"
	}
	off := &libvirtxml.DomainPMPolicy{Enabled: "no"}
	mgmtMAC, primaryMAC := MACs(s.Name)
	if s.Management.MAC != "" {
		mgmtMAC = s.Management.MAC
	}
	if s.Primary.MAC != "" {
		primaryMAC = s.Primary.MAC
	}
	cpu := &libvirtxml.DomainCPU{
		Features: []libvirtxml.DomainCPUFeature{{Policy: "disable", Name: "vmx"}, {Policy: "disable", Name: "svm"}},
	}
	features := &libvirtxml.DomainFeatureList{ACPI: &libvirtxml.DomainFeature{}, APIC: &libvirtxml.DomainFeatureAPIC{}}
	if typ == "kvm" {
		cpu.Mode = "host-model"
	} else {
		cpu.Mode, cpu.Match, cpu.Model = "custom", "exact", &libvirtxml.DomainCPUModel{Value: "qemu64", Fallback: "forbid"}
		// TCG's translation cache defaults to 1 GiB per guest; a desktop needs far less.
		features.TCG = &libvirtxml.DomainFeatureTCG{TBCache: &libvirtxml.DomainFeatureTCGTBCache{Unit: "MiB", Size: TCGCacheMiB}}
	}
	d := &libvirtxml.Domain{
		Type:        typ,
		Name:        s.Name,
		Description: "deskhost WorkSpace " + s.Name,
		Metadata:    ownerMetadata(s.Owner),
		Memory:      &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB", DumpCore: "off"},
		MemoryBacking: &libvirtxml.DomainMemoryBacking{
			MemoryNosharepages: &libvirtxml.DomainMemoryNosharepages{},
			MemorySource:       &libvirtxml.DomainMemorySource{Type: "memfd"},
			MemoryAccess:       &libvirtxml.DomainMemoryAccess{Mode: "shared"},
		},
		VCPU: &libvirtxml.DomainVCPU{Value: uint(s.VCPUs)},
		CPU:  cpu,
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Type: "hvm", Arch: "x86_64", Machine: "pc"},
			Kernel:  s.Kernel,
			Initrd:  s.Initrd,
			Cmdline: s.Cmdline,
		},
		Features:   features,
		PM:         &libvirtxml.DomainPM{SuspendToMem: off, SuspendToDisk: off},
		OnPoweroff: "destroy",
		OnReboot:   "restart",
		OnCrash:    "destroy",
		Devices: &libvirtxml.DomainDeviceList{
			Disks: []libvirtxml.DomainDisk{
				disk(s.RootVolume, "vda"),
				disk(s.UserVolume, "vdb"),
			},
			Interfaces: []libvirtxml.DomainInterface{
				nic(s.Management, mgmtMAC, managementSlot),
				nic(s.Primary, primaryMAC, primarySlot),
			},
			// The serial console goes through virtlogd, which caps its size
			// (internal/virtlogconf): a guest writing to its serial port cannot fill /perm.
			Serials: []libvirtxml.DomainSerial{{
				Source: &libvirtxml.DomainChardevSource{Null: &libvirtxml.DomainChardevSourceNull{}},
				Log:    &libvirtxml.DomainChardevLog{File: s.SerialLog, Append: "on"},
				Target: &libvirtxml.DomainSerialTarget{Port: new(uint)},
			}},
			Consoles: []libvirtxml.DomainConsole{{
				Target: &libvirtxml.DomainConsoleTarget{Type: "serial", Port: new(uint)},
			}},
			Channels: []libvirtxml.DomainChannel{{
				Source: &libvirtxml.DomainChardevSource{UNIX: &libvirtxml.DomainChardevSourceUNIX{Mode: "bind", Path: s.AgentSocket}},
				Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: AgentChannel}},
			}},
			Graphics: []libvirtxml.DomainGraphic{{
				VNC: &libvirtxml.DomainGraphicVNC{Socket: s.VNCSocket},
			}},
			Videos: []libvirtxml.DomainVideo{{
				Model: libvirtxml.DomainVideoModel{Type: "vga", VRam: 16384, Heads: 1, Primary: "yes"},
			}},
			Panics: []libvirtxml.DomainPanic{{Model: "isa"}},
			// Entropy from the host: a fresh guest's CRNG otherwise takes long to seed, and
			// everything that needs random numbers early (DHCP, TLS, mke2fs) waits on it.
			RNGs:       []libvirtxml.DomainRNG{{Model: "virtio", Backend: &libvirtxml.DomainRNGBackend{Random: &libvirtxml.DomainRNGBackendRandom{Device: "/dev/urandom"}}}},
			MemBalloon: &libvirtxml.DomainMemBalloon{Model: "none"},
		},
	}
	return d, nil
}

func ownerMetadata(owner string) *libvirtxml.DomainMetadata {
	if owner == "" {
		return nil
	}
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(owner))
	return &libvirtxml.DomainMetadata{XML: `<deskhost:owner xmlns:deskhost="` + OwnerNamespace + `">` + b.String() + `</deskhost:owner>`}
}

func disk(path, dev string) libvirtxml.DomainDisk {
	return libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target: &libvirtxml.DomainDiskTarget{Dev: dev, Bus: "virtio"},
	}
}

func nic(n NIC, mac string, slot uint) libvirtxml.DomainInterface {
	zero := uint(0)
	src := &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: n.Bridge}}
	var target *libvirtxml.DomainInterfaceTarget
	if n.Tap != "" {
		// netcfg made the tap, bridged it and firewalled it by name: qemu only opens it.
		src = &libvirtxml.DomainInterfaceSource{Ethernet: &libvirtxml.DomainInterfaceSourceEthernet{}}
		target = &libvirtxml.DomainInterfaceTarget{Dev: n.Tap, Managed: "no"}
	}
	return libvirtxml.DomainInterface{
		Source: src,
		Target: target,
		MAC:    &libvirtxml.DomainInterfaceMAC{Address: mac},
		Model:  &libvirtxml.DomainInterfaceModel{Type: "virtio"},
		Address: &libvirtxml.DomainAddress{PCI: &libvirtxml.DomainAddressPCI{
			Domain: &zero, Bus: &zero, Slot: &slot, Function: &zero,
		}},
	}
}

// DomainXML is Domain marshalled.
func DomainXML(s Spec) (string, error) {
	d, err := Domain(s)
	if err != nil {
		return "", err
	}
	x, err := d.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal domain %s: %w", s.Name, err)
	}
	return x, nil
}
