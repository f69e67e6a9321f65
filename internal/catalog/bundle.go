// Bundles: compute types, images, bundles, and the guide's launch-time rules for volume
// sizes and protocols (guide catalog §1.9, §3).

package catalog

import (
	"fmt"
	"time"
)

// ComputeType names the guide's hardware sizes (AWS's Compute enum).
type ComputeType string

const (
	ComputeValue       ComputeType = "VALUE"
	ComputeStandard    ComputeType = "STANDARD"
	ComputePerformance ComputeType = "PERFORMANCE"
	ComputePower       ComputeType = "POWER"
	ComputePowerPro    ComputeType = "POWERPRO"
	ComputeGraphics    ComputeType = "GRAPHICS"
	ComputeGraphicsPro ComputeType = "GRAPHICSPRO"
)

// KnownComputeTypes lists every compute type the guide names, in its order.
var KnownComputeTypes = []ComputeType{ComputeValue, ComputeStandard, ComputePerformance, ComputePower, ComputePowerPro, ComputeGraphics, ComputeGraphicsPro}

// GPU reports whether c is a Graphics family type, which has its own volume minimums.
func (c ComputeType) GPU() bool { return c == ComputeGraphics || c == ComputeGraphicsPro }

// Known reports whether c is one of the guide's compute types.
func (c ComputeType) Known() bool {
	for _, k := range KnownComputeTypes {
		if c == k {
			return true
		}
	}
	return false
}

// Hardware is what a compute type gets on this host.
type Hardware struct {
	VCPUs     int `yaml:"vcpus" json:"vcpus"`
	MemoryMiB int `yaml:"memoryMiB" json:"memoryMiB"`
}

// Protocol is the streaming protocol a bundle uses.
type Protocol string

const (
	PCoIP Protocol = "PCOIP"
	WSP   Protocol = "WSP"
)

// OS is an image's operating system family; per-OS rules (user names, protocols) hang off it.
type OS string

const (
	Linux   OS = "linux"
	Windows OS = "windows"
)

// Image is a desktop image on this host: a directory imagebuild wrote (image.json beside a
// kernel, an initramfs and a root filesystem).
type Image struct {
	ID          string    `yaml:"id" json:"id"`
	Name        string    `yaml:"name" json:"name"`
	Description string    `yaml:"description" json:"description,omitempty"`
	OS          OS        `yaml:"os" json:"os"`
	Dir         string    `yaml:"dir" json:"dir"`
	Created     time.Time `yaml:"-" json:"created,omitzero"`
	// Digest is the image's content hash (the SHA-256 of its image.json), by which the
	// hosts of a fleet fetch it from the one it was registered on.
	Digest string `yaml:"-" json:"digest,omitempty"`

	// State is PENDING while hostd makes the image (captures or imports it), then
	// AVAILABLE or ERROR (with ErrorCode and ErrorMessage saying why). Empty: AVAILABLE
	// (an image registered from a directory imagebuild wrote).
	State        ImageState `yaml:"-" json:"state,omitempty"`
	ErrorCode    string     `yaml:"-" json:"errorCode,omitempty"`
	ErrorMessage string     `yaml:"-" json:"errorMessage,omitempty"`
	// SourceWorkspace is the WorkSpace an image is being (or was) captured from;
	// SourceImage the image a copy was made of; Import what an import reads.
	SourceWorkspace string `yaml:"-" json:"sourceWorkspace,omitempty"`
	SourceImage     string `yaml:"-" json:"sourceImage,omitempty"`
	Import          string `yaml:"-" json:"import,omitempty"`
	// Owned: hostd made Dir (a capture, a copy or an import) and removes it with the
	// image; a registered directory belongs to whoever built it.
	Owned bool `yaml:"-" json:"owned,omitempty"`
	// Maker is the host that makes a PENDING import (its controller fetches, converts
	// and test-boots it).
	Maker string `yaml:"-" json:"maker,omitempty"`
	// BaseImage is the image whose kernel and initramfs (the guest agent as PID 1) an
	// imported root volume boots with.
	BaseImage string `yaml:"-" json:"baseImage,omitempty"`
}

// ImageState is AWS's WorkspaceImageState.
type ImageState string

const (
	ImagePending   ImageState = "PENDING"
	ImageAvailable ImageState = "AVAILABLE"
	ImageError     ImageState = "ERROR"
)

// Status is the image's state, AVAILABLE for a record without one.
func (i Image) Status() ImageState {
	if i.State == "" {
		return ImageAvailable
	}
	return i.State
}

// MaxImages is the guide's images quota: "By default, you're allowed 20 WorkSpace images
// per Region. If you've reached this quota, new attempts to create an image will fail."
const MaxImages = 20

// Bundle is an image plus hardware and default volume sizes.
type Bundle struct {
	ID          string      `yaml:"id" json:"id"`
	Name        string      `yaml:"name" json:"name"`
	Description string      `yaml:"description" json:"description"`
	ImageID     string      `yaml:"image" json:"imageId"`
	ComputeType ComputeType `yaml:"computeType" json:"computeType"`
	Protocol    Protocol    `yaml:"protocol" json:"protocol"`
	RootGiB     int         `yaml:"rootGiB" json:"rootGiB"`
	UserGiB     int         `yaml:"userGiB" json:"userGiB"`
	Created     time.Time   `yaml:"-" json:"created,omitzero"`
	Updated     time.Time   `yaml:"-" json:"updated,omitzero"`
	// DeleteQueued marks a bundle deleted while WorkSpaces still use it: "the bundle is
	// placed in a delete queue and will be deleted after all WorkSpaces that are based on
	// the bundle have been deleted". It is no longer described or launched from.
	DeleteQueued bool `yaml:"-" json:"deleteQueued,omitempty"`
}

// MaxVolumeGiB is the largest root or user volume the guide allows.
const MaxVolumeGiB = 2000

// ValidateVolumes applies the guide's launch groups: [80,10] [80,50] [80,100]
// [175–2000, 100–2000]; a Graphics or GraphicsPro WorkSpace needs at least 100 GB each
// ("You can launch a Graphics or GraphicsPro WorkSpace with a minimum of 100 GB for the root
// volume and 100 GB for the user volume").
func ValidateVolumes(c ComputeType, rootGiB, userGiB int) error {
	if rootGiB > MaxVolumeGiB || userGiB > MaxVolumeGiB {
		return Errorf(InvalidParameterValues,
			"volume sizes root %d GB, user %d GB: each volume can be at most %d GB", rootGiB, userGiB, MaxVolumeGiB)
	}
	if c.GPU() {
		if rootGiB >= 100 && userGiB >= 100 {
			return nil
		}
		return Errorf(InvalidParameterValues,
			"volume sizes root %d GB, user %d GB: a %s WorkSpace needs at least 100 GB root and 100 GB user", rootGiB, userGiB, c)
	}
	switch {
	case rootGiB == 80 && (userGiB == 10 || userGiB == 50 || userGiB == 100):
		return nil
	case rootGiB >= 175 && userGiB >= 100:
		return nil
	}
	return Errorf(InvalidParameterValues,
		"volume sizes root %d GB, user %d GB are not an allowed group: use [80,10], [80,50], [80,100] or [175-2000, 100-2000]", rootGiB, userGiB)
}

// ValidateProtocol checks a bundle's protocol against its image's OS: "Linux WorkSpaces
// support only the PCoIP protocol".
func ValidateProtocol(p Protocol, os OS) error {
	switch p {
	case PCoIP:
		return nil
	case WSP:
		if os == Linux {
			return Errorf(InvalidParameterValues, "protocol WSP is not available for Linux images: Linux WorkSpaces support only PCOIP")
		}
		return nil
	}
	return Errorf(InvalidParameterValues, "protocol %q must be PCOIP or WSP", p)
}

// Validate checks a bundle against its image and the host's compute types.
func (b Bundle) Validate(img Image, hw map[ComputeType]Hardware) error {
	if !b.ComputeType.Known() {
		return fmt.Errorf("bundle %s: computeType %q is not one of %v", b.ID, b.ComputeType, KnownComputeTypes)
	}
	if _, ok := hw[b.ComputeType]; !ok {
		return fmt.Errorf("bundle %s: computeType %s has no hardware in computeTypes", b.ID, b.ComputeType)
	}
	if err := ValidateProtocol(b.Protocol, img.OS); err != nil {
		return fmt.Errorf("bundle %s: %s", b.ID, AsError(err).Message)
	}
	if err := ValidateVolumes(b.ComputeType, b.RootGiB, b.UserGiB); err != nil {
		return fmt.Errorf("bundle %s: default %s", b.ID, AsError(err).Message)
	}
	return nil
}
