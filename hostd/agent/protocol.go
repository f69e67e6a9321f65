// Package agent holds the wire protocol spoken between hostd and the guest agent that runs
// as PID 1 inside every WorkSpace desktop image (hostd/guestagent), and a client hostd uses.
//
// Transport: a virtio-serial port named ChannelName. In the libvirt domain:
//
//	<channel type='unix'>
//	  <source mode='bind' path='/run/deskhost/ws-.../agent.sock'/>
//	  <target type='virtio' name='org.deskhost.agent.0'/>
//	</channel>
//
// qemu listens on the unix socket; hostd connects to it. Framing: newline-delimited JSON,
// one Request answered by exactly one Response carrying the same id. Requests are served
// one at a time, in order.
package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"
	"unicode/utf8"
)

// Version is the guest agent's version, reported by status and recorded in image.json.
const Version = "0.1.0"

// ChannelName is the virtio-serial port name (libvirt <target type='virtio' name=.../>).
const ChannelName = "org.deskhost.agent.0"

// ReadyLine is printed by the agent on the guest's serial console (ttyS0) once the
// volumes are mounted and it serves requests.
const ReadyLine = "deskhost-agent: ready"

// Operations.
const (
	OpStatus     = "status"
	OpFillMemory = "fill-memory"
	OpWriteFile  = "write-file"
	OpReadFile   = "read-file"
	OpShutdown   = "shutdown"
	OpCrash      = "crash"
	// clipboard-get answers the guest clipboard's text in Data; clipboard-set (Data) makes
	// it the guest's and offers it to the host (qemu's VNC clients) over the spice agent
	// channel (hostd/vdagent).
	OpClipboardGet = "clipboard-get"
	OpClipboardSet = "clipboard-set"
	// freeze syncs and freezes (FIFREEZE) the volumes' filesystems; thaw (FITHAW) undoes
	// it. Both answer with the filesystems concerned.
	OpFreeze = "freeze"
	OpThaw   = "thaw"
	// OpSilence stops the agent for a while, the guest still running: it answers, closes
	// its port and ignores it for Seconds, then serves again. Tests use it to make a
	// WorkSpace miss its status checks (guide §19) the way a dead agent would.
	OpSilence = "silence"
	// OpSanitize runs the guide's Linux image sanitising steps on the root volume (SSH
	// host keys shredded, machine-id truncated, logs, caches, temporary files and shell
	// histories removed), refusing a root volume MaxImageRootPercent or more full. It
	// answers the root volume's use (RootUsedPercent) and what it changed (Sanitized).
	OpSanitize = "sanitize"
	// OpGrowFS grows a volume's mounted ext4 filesystem online to fill its disk, once the
	// disk (just grown by hostd: libvirt's block resize) shows at least MinBytes. Volume is
	// VolumeRoot or VolumeUser. It answers the filesystem's and the disk's sizes.
	OpGrowFS = "grow-fs"
	// OpReadChunk answers Length bytes (at most MaxChunkBytes) of a file from Offset, as
	// bytes (base64 on the wire: read-file's text would mangle a binary file), and the
	// file's size; hostd reads a kernel or an initramfs larger than MaxFileBytes with it.
	OpReadChunk = "read-chunk"
	// OpAdopt makes the mounted root volume (an imported image, booted with the agent as
	// PID 1) boot on its own: it finds the image's systemd, its newest kernel and
	// initramfs in /boot, installs this agent and its systemd units
	// (internal/guestservice), and answers what hostd needs to boot it (Adoption).
	OpAdopt = "adopt"
)

// Volumes, as grow-fs names them.
const (
	VolumeRoot = "root"
	VolumeUser = "user"
)

// MaxImageRootPercent: "The root volume (/) should be less than 97% full" for an image.
const MaxImageRootPercent = 97

// Limits.
const (
	// MaxLineBytes is the longest request or response line either side accepts.
	MaxLineBytes = 24 << 20
	// MaxFileBytes is the largest payload of write-file and read-file.
	MaxFileBytes = 16 << 20
	// MinMarkerBytes is the shortest marker fill-memory accepts.
	MinMarkerBytes = 8
	// MaxClipboardBytes is the most clipboard text either way (qemu buffers at most 1 MiB
	// for the agent).
	MaxClipboardBytes = 1 << 20
	// MaxFillPercent is the largest share of MemAvailable fill-memory takes.
	MaxFillPercent = 95
	// MaxFreeze is how long the guest keeps its filesystems frozen before it thaws them
	// itself, should hostd never ask.
	MaxFreeze = 30 * time.Second
	// MaxSilenceSeconds is the longest silence accepts.
	MaxSilenceSeconds = 3600
	// GrowDiskWait is how long grow-fs waits for the guest kernel to see the disk's new
	// size.
	GrowDiskWait = 30 * time.Second
	// MaxChunkBytes is the most read-chunk answers at once (base64: 4/3 of it on the line).
	MaxChunkBytes = 8 << 20
)

// Volume mount points inside the guest. write-file and read-file only touch files below
// these.
const (
	RootMount = "/sysroot"
	HomeMount = "/home"
)

// Request is one line sent by hostd. Only the fields of its op are set.
type Request struct {
	ID uint64 `json:"id"`
	Op string `json:"op"`

	// fill-memory
	Marker  string `json:"marker,omitempty"`
	Percent int    `json:"percent,omitempty"`

	// write-file, read-file
	Path string `json:"path,omitempty"`
	Data string `json:"data,omitempty"`

	// shutdown
	Reboot bool `json:"reboot,omitempty"`

	// silence
	Seconds int `json:"seconds,omitempty"`

	// grow-fs
	Volume   string `json:"volume,omitempty"`
	MinBytes uint64 `json:"minBytes,omitempty"`

	// read-chunk (with Path)
	Offset int64 `json:"offset,omitempty"`
	Length int   `json:"length,omitempty"`
}

// Response is one line sent by the agent. Error is set when OK is false.
type Response struct {
	ID    uint64 `json:"id"`
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`

	// status
	*Status

	// fill-memory
	BytesFilled uint64 `json:"bytesFilled,omitempty"`

	// read-file (write-file answers with BytesWritten)
	Data         string `json:"data,omitempty"`
	BytesWritten uint64 `json:"bytesWritten,omitempty"`

	// freeze, thaw
	Filesystems []string `json:"filesystems,omitempty"`

	// sanitize
	RootUsedPercent float64  `json:"rootUsedPercent,omitempty"`
	Sanitized       []string `json:"sanitized,omitempty"`
	// grow-fs: the filesystem's size after growing, and its disk's
	FSBytes   uint64 `json:"fsBytes,omitempty"`
	DiskBytes uint64 `json:"diskBytes,omitempty"`

	// read-chunk: the bytes read (fewer than asked at the end) and the file's size
	Chunk     []byte `json:"chunk,omitempty"`
	FileBytes int64  `json:"fileBytes,omitempty"`

	// adopt
	Adoption *Adoption `json:"adoption,omitempty"`
}

// adopt's errors start with these when the image lacks what it needs to boot on its own
// (hostd reports them as the import's NoSystemd and NoKernel codes).
const (
	AdoptNoSystemd = "adopt: no systemd"
	AdoptNoKernel  = "adopt: no kernel"
)

// Adoption is what adopt found and did in the root volume.
type Adoption struct {
	// KernelVersion is the kernel's release (uname -r), e.g. 6.1.0-28-amd64.
	KernelVersion string `json:"kernelVersion"`
	// Kernel and Initrd are their paths for read-chunk (below RootMount).
	Kernel      string `json:"kernel"`
	Initrd      string `json:"initrd"`
	KernelBytes int64  `json:"kernelBytes"`
	InitrdBytes int64  `json:"initrdBytes"`
	// RootUUID is the root filesystem's UUID, for root=UUID=.
	RootUUID string `json:"rootUuid"`
	// Installed lists the files adopt wrote into the image.
	Installed []string `json:"installed,omitempty"`
}

// Status is the answer to the status op.
type Status struct {
	WorkspaceID     string `json:"workspaceId"`
	User            string `json:"user,omitempty"`
	Hostname        string `json:"hostname"`
	UptimeMs        uint64 `json:"uptimeMs"`
	RootMounted     bool   `json:"rootMounted"`
	HomeMounted     bool   `json:"homeMounted"`
	HomeFormatted   bool   `json:"homeFormatted,omitempty"` // this boot created the home filesystem
	MemTotalKiB     uint64 `json:"memTotalKiB"`
	MemAvailableKiB uint64 `json:"memAvailableKiB"`
	AgentVersion    string `json:"agentVersion"`
	// Answered counts the requests this agent process has answered, this one included:
	// state in a guest process's memory, which a hibernated guest keeps and a boot resets.
	Answered      uint64 `json:"answered,omitempty"`
	KernelRelease string `json:"kernelRelease,omitempty"`
	// Interfaces are the guest's NICs (eth0 is the management NIC).
	Interfaces []Interface `json:"interfaces,omitempty"`
	// ManagementAddress is the address the management NIC leased from the host, if any.
	ManagementAddress string `json:"managementAddress,omitempty"`
	// RootFSBytes and HomeFSBytes are the sizes of the volumes' mounted filesystems
	// (statfs: blocks × block size), 0 when not mounted.
	RootFSBytes uint64 `json:"rootFSBytes,omitempty"`
	HomeFSBytes uint64 `json:"homeFSBytes,omitempty"`
	// Errors lists what went wrong while bringing the guest up (a volume that did not
	// appear, a module that did not load...), for hostd's logs.
	Errors []string `json:"errors,omitempty"`
}

// Interface is one guest NIC.
type Interface struct {
	Name      string   `json:"name"`
	MAC       string   `json:"mac"`
	Addresses []string `json:"addresses,omitempty"` // CIDR notation
}

// Encode returns v as one protocol line (JSON plus '\n').
func Encode(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	if len(b)+1 > MaxLineBytes {
		return nil, fmt.Errorf("agent: message of %d bytes exceeds the %d byte line limit", len(b), MaxLineBytes)
	}
	return append(b, '\n'), nil
}

// DecodeRequest parses one request line and checks its op-specific fields.
func DecodeRequest(line []byte) (Request, error) {
	var r Request
	if err := json.Unmarshal(line, &r); err != nil {
		return r, fmt.Errorf("bad request: %v", err)
	}
	if r.Op == "" {
		return r, errors.New("bad request: missing op")
	}
	return r, r.Validate()
}

// Validate checks the fields of a known op. Unknown ops are reported by the agent, not
// here, so that the error names the op.
func (r Request) Validate() error {
	switch r.Op {
	case OpFillMemory:
		if len(r.Marker) < MinMarkerBytes {
			return fmt.Errorf("fill-memory: marker must be at least %d bytes", MinMarkerBytes)
		}
		if r.Percent < 1 || r.Percent > MaxFillPercent {
			return fmt.Errorf("fill-memory: percent must be 1..%d, got %d", MaxFillPercent, r.Percent)
		}
	case OpWriteFile:
		if err := CheckPath(r.Path); err != nil {
			return err
		}
		if len(r.Data) > MaxFileBytes {
			return fmt.Errorf("write-file: data of %d bytes exceeds %d", len(r.Data), MaxFileBytes)
		}
	case OpReadFile:
		return CheckPath(r.Path)
	case OpClipboardSet:
		if len(r.Data) > MaxClipboardBytes {
			return fmt.Errorf("clipboard-set: text of %d bytes exceeds %d", len(r.Data), MaxClipboardBytes)
		}
		if !utf8.ValidString(r.Data) {
			return errors.New("clipboard-set: text is not valid UTF-8")
		}
	case OpGrowFS:
		if r.Volume != VolumeRoot && r.Volume != VolumeUser {
			return fmt.Errorf("grow-fs: volume must be %q or %q, got %q", VolumeRoot, VolumeUser, r.Volume)
		}
	case OpReadChunk:
		if err := CheckPath(r.Path); err != nil {
			return err
		}
		if r.Offset < 0 {
			return fmt.Errorf("read-chunk: offset must not be negative, got %d", r.Offset)
		}
		if r.Length < 1 || r.Length > MaxChunkBytes {
			return fmt.Errorf("read-chunk: length must be 1..%d, got %d", MaxChunkBytes, r.Length)
		}
	case OpSilence:
		if r.Seconds < 1 || r.Seconds > MaxSilenceSeconds {
			return fmt.Errorf("silence: seconds must be 1..%d, got %d", MaxSilenceSeconds, r.Seconds)
		}
	}
	return nil
}

// CheckPath accepts only clean absolute paths strictly below RootMount or HomeMount.
func CheckPath(p string) error {
	if p == "" {
		return errors.New("path is empty")
	}
	if strings.ContainsRune(p, 0) {
		return errors.New("path contains a NUL byte")
	}
	if !strings.HasPrefix(p, "/") {
		return fmt.Errorf("path %q is not absolute", p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == ".." {
			return fmt.Errorf("path %q contains ..", p)
		}
	}
	if path.Clean(p) != p {
		return fmt.Errorf("path %q is not clean", p)
	}
	for _, m := range []string{RootMount, HomeMount} {
		if strings.HasPrefix(p, m+"/") {
			return nil
		}
	}
	return fmt.Errorf("path %q is not below %s/ or %s/", p, RootMount, HomeMount)
}
