package virt

import (
	"fmt"
	"testing"
)

func TestScratchXML(t *testing.T) {
	x, err := DomainXML(Spec{Name: "ws-scratch0001", Type: "qemu", VCPUs: 1, MemoryMiB: 128, Kernel: "/tmp/kdl/x/boot/vmlinuz-6.1.0-56-amd64", Cmdline: "console=ttyS0 panic=-1",
		RootVolume: "/tmp/vt/root.qcow2", UserVolume: "/tmp/vt/user.qcow2", ManagementBridge: "dhtest-mgmt", PrimaryBridge: "dhtest-pri",
		VNCSocket: "/tmp/vt/vnc.sock", AgentSocket: "/tmp/vt/agent.sock", SerialLog: "/tmp/vt/serial.log"})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println(x)
}
