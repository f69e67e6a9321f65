// Package imagelayout is the contract between imagebuild, which lays out the appliance
// image, and init, which boots it: where things are inside the image, what the kernel
// command line may say to init, and the line the console prints when the host is ready.
package imagelayout

import (
	"encoding/json"
	"fmt"
	"os"
)

// Paths inside the image.
const (
	// BakedConfig is the default host config built into the image (profile hostConfig).
	BakedConfig = "/etc/deskhost/host.yaml"
	// ReleaseFile describes the image (Release, JSON).
	ReleaseFile = "/etc/deskhost/release.json"
	// ModulesRoot holds the kernel's modules: ModulesRoot/RELEASE/... with the index of
	// package modindex.
	ModulesRoot = "/lib/modules"
	// Perm is where the persistent data partition is mounted.
	Perm = "/perm"
	// PermConfig is the host config on /perm, used when the command line names none and
	// the image has no baked one.
	PermConfig = "/perm/deskhost.yaml"

	Hostd      = "/usr/bin/hostd"
	Netcfg     = "/usr/bin/netcfg"
	Zeroclient = "/usr/bin/zeroclient"
	Libvirtd   = "/usr/sbin/libvirtd"
	Virtlogd   = "/usr/sbin/virtlogd"
	Mke2fs     = "/usr/sbin/mke2fs"
	Shell      = "/bin/sh"
	Modprobe   = "/sbin/modprobe" // a link to /init: init answers the kernel's module requests
)

// PermLabel is the GPT partition name of the persistent data partition.
const PermLabel = "deskhost-perm"

// Kernel command line parameters init reads.
const (
	// ParamConfig names the host config: a path, or an https://, http:// or tftp:// URL.
	// A fetched config must be verifiable by ParamConfigCA or ParamConfigSHA256: the
	// command line is not secret, but it is trusted (it comes with the kernel).
	ParamConfig = "deskhost.config"
	// ParamConfigCA pins the CA an https:// config's server certificate must chain to:
	// the sha256 fingerprint of the CA certificate (DER), hex, colons allowed, optionally
	// prefixed "sha256:". The server sends the CA in its chain.
	ParamConfigCA = "deskhost.config.ca"
	// ParamConfigSHA256 is the sha256 of the config file itself (hex).
	ParamConfigSHA256 = "deskhost.config.sha256"
	// ParamBootIF is the MAC of the NIC the host network-booted from, as iPXE
	// (${netX/mac}) or pxelinux (01-aa-bb-cc-dd-ee-ff) put it on the command line.
	ParamBootIF = "BOOTIF"
	// ParamPerm names the /perm device (e.g. /dev/vdb) instead of finding it by PermLabel.
	ParamPerm = "deskhost.perm"
)

// ReadyLine is what the console prints when hostd and zeroclient serve.
const ReadyLine = "deskhost: ready"

// Release describes a built image.
type Release struct {
	Name    string `json:"name"`
	Version string `json:"version"` // profile version + "+g" + commit
	Commit  string `json:"commit,omitempty"`
	Kernel  string `json:"kernel"` // uname -r
}

// ReadRelease reads ReleaseFile (or another path).
func ReadRelease(path string) (Release, error) {
	var r Release
	b, err := os.ReadFile(path)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}
