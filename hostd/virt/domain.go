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

// ClipboardChannel is the spice agent's port name (hostd/vdagent.ChannelName).
const ClipboardChannel = "com.redhat.spice.0"

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

	// NoClipboard leaves out the clipboard channel: no text crosses between the
	// WorkSpace and its VNC clients.
	NoClipboard bool

	RootVolume, UserVolume string // qcow2 files
	// RootSecret and UserSecret are the secrets (DefineVolumeSecret) of volumes encrypted
	// with LUKS; "" for a plain one.
	RootSecret, UserSecret string

	// Management is guest eth0, Primary guest eth1.
	Management, Primary NIC
	// Isolated: no NIC at all (an imported image's test boot: it talks to hostd over the
	// agent channel only).
	Isolated bool

	VNCSocket   string // the display: a unix socket, never a TCP port
	AgentSocket string // the guest agent's virtio-serial channel
	SerialLog   string // the guest's serial console, appended to a file

	// HugePages backs guest RAM with 2 MiB pages (a hugetlb memfd, preallocated by qemu at
	// start): it is scrubbed at memory speed, and the host must reserve the pages.
	HugePages bool
	// RunAs is the DAC label qemu runs with ("+uid:+gid", see hostd/confine), with libvirt
	// relabelling nothing; "" leaves the user to libvirt's qemu.conf.
	RunAs string
	// Limits puts the WorkSpace's cgroup under limits: CPU time of VCPUs host cores
	// (cpu.max) and host memory of MemoryLimitMiB (memory.max).
	Limits bool
}

// cpuPeriod is the cgroup CPU period the quota is measured in (cpu.max's second field).
const cpuPeriod = 100000 // µs

// QemuOverheadMiB is what a qemu process may use beyond guest RAM: its own heap, the kernel
// and initrd it loads, device state, page tables, and the page cache of its disk I/O
// (reclaimed within the limit, not killed). Measured at about 100–160 MiB for an idle TCG
// guest (scripts/bench/hostd.sh); the margin keeps a busy guest from being OOM-killed.
const QemuOverheadMiB = 512

// MemoryLimitMiB is the memory.max of a WorkSpace's cgroup. Guest RAM on huge pages is not
// charged to the memory controller (hugetlb pages never are), so only qemu itself counts.
func (s Spec) MemoryLimitMiB() int {
	limit := QemuOverheadMiB
	if !s.HugePages {
		limit += s.MemoryMiB
	}
	if s.Type == "qemu" {
		limit += TCGCacheMiB
	}
	return limit
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
//   - with RunAs, qemu runs unprivileged through libvirt's DAC driver with a static label
//     and relabel='no': libvirt chowns nothing, in particular not the shared kernel, initrd
//     and base image, which any compromised qemu could otherwise rewrite (hostd/confine
//     hands the WorkSpace's own files over).
//   - with Limits, cgroup limits: global_quota caps the whole domain (vCPU and emulator
//     threads) at VCPUs cores; hard_limit is memory.max.
func Domain(s Spec) (*libvirtxml.Domain, error) {
	if s.Name == "" || s.VCPUs < 1 || s.MemoryMiB < 64 || s.Kernel == "" || s.RootVolume == "" || s.UserVolume == "" {
		return nil, fmt.Errorf("domain spec for %q: name, vcpus, memory ≥ 64 MiB, kernel and both volumes are required", s.Name)
	}
	for _, n := range []NIC{s.Management, s.Primary} {
		if s.Isolated {
			break
		}
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
	backing := &libvirtxml.DomainMemoryBacking{
		MemoryNosharepages: &libvirtxml.DomainMemoryNosharepages{},
		MemorySource:       &libvirtxml.DomainMemorySource{Type: "memfd"},
		MemoryAccess:       &libvirtxml.DomainMemoryAccess{Mode: "shared"},
	}
	if s.HugePages {
		if s.MemoryMiB%2 != 0 {
			return nil, fmt.Errorf("domain spec for %s: %d MiB of RAM is not a whole number of 2 MiB pages", s.Name, s.MemoryMiB)
		}
		backing.MemoryHugePages = &libvirtxml.DomainMemoryHugepages{Hugepages: []libvirtxml.DomainMemoryHugepage{{Size: 2048, Unit: "KiB"}}}
	}
	d := &libvirtxml.Domain{
		Type:          typ,
		Name:          s.Name,
		Description:   "deskhost WorkSpace " + s.Name,
		Metadata:      ownerMetadata(s.Owner),
		Memory:        &libvirtxml.DomainMemory{Value: uint(s.MemoryMiB), Unit: "MiB", DumpCore: "off"},
		MemoryBacking: backing,
		VCPU:          &libvirtxml.DomainVCPU{Value: uint(s.VCPUs)},
		CPU:           cpu,
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
				disk(s.RootVolume, "vda", s.RootSecret),
				disk(s.UserVolume, "vdb", s.UserSecret),
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
	if s.Isolated {
		d.Devices.Interfaces = nil
	}
	if !s.NoClipboard {
		// Clipboard redirection (WorkSpaces enables it unless an administrator turns it
		// off): qemu's vdagent shares its VNC server's clipboard with the spice agent
		// port in the guest (hostd/vdagent; the tiny image's guest agent answers there).
		d.Devices.Channels = append(d.Devices.Channels, clipboardChannel())
	}
	if s.RunAs != "" {
		d.SecLabel = []libvirtxml.DomainSecLabel{{Type: "static", Model: "dac", Relabel: "no", Label: s.RunAs}}
	}
	if s.Limits {
		d.CPUTune = &libvirtxml.DomainCPUTune{
			GlobalPeriod: &libvirtxml.DomainCPUTunePeriod{Value: cpuPeriod},
			GlobalQuota:  &libvirtxml.DomainCPUTuneQuota{Value: int64(s.VCPUs) * cpuPeriod},
		}
		d.MemoryTune = &libvirtxml.DomainMemoryTune{HardLimit: &libvirtxml.DomainMemoryTuneLimit{Value: uint64(s.MemoryLimitMiB()), Unit: "MiB"}}
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

func disk(path, dev, secretUUID string) libvirtxml.DomainDisk {
	d := libvirtxml.DomainDisk{
		Device: "disk",
		Driver: &libvirtxml.DomainDiskDriver{Name: "qemu", Type: "qcow2"},
		Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: path}},
		Target: &libvirtxml.DomainDiskTarget{Dev: dev, Bus: "virtio"},
	}
	if secretUUID != "" {
		// On the source: the volume's own layer is encrypted, not its backing image.
		d.Source.Encryption = diskEncryption(secretUUID)
	}
	return d
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

// Bytes converts a libvirt memory size (value and unit, as in <memory unit='KiB'>) to
// bytes. libvirt's units: b/bytes, KB/MB/GB/TB (powers of 1000), k/KiB, M/MiB, G/GiB,
// T/TiB (powers of 1024); no unit is KiB.
func Bytes(value uint, unit string) (int64, error) {
	mult := map[string]int64{
		"": 1 << 10, "b": 1, "bytes": 1,
		"KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"k": 1 << 10, "KiB": 1 << 10, "M": 1 << 20, "MiB": 1 << 20,
		"G": 1 << 30, "GiB": 1 << 30, "T": 1 << 40, "TiB": 1 << 40,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("memory unit %q is not one of libvirt's", unit)
	}
	return int64(value) * mult, nil
}

// clipboardChannel is the qemu-vdagent channel with copy/paste on the spice agent's port.
func clipboardChannel() libvirtxml.DomainChannel {
	return libvirtxml.DomainChannel{
		Source: &libvirtxml.DomainChardevSource{QEMUVDAgent: &libvirtxml.DomainChardevSourceQEMUVDAgent{
			ClipBoard: &libvirtxml.DomainChardevSourceQEMUVDAgentClipBoard{CopyPaste: "yes"}}},
		Target: &libvirtxml.DomainChannelTarget{VirtIO: &libvirtxml.DomainChannelTargetVirtIO{Name: ClipboardChannel}},
	}
}
