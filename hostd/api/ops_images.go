package api

import (
	"context"

	"deskhost/hostd/service"
	"deskhost/internal/catalog"
)

// ImagesService makes images: CreateWorkspaceImage (a WorkSpace's root volume, captured by
// the controller), CopyWorkspaceImage, ImportWorkspaceImage.
type ImagesService interface {
	CreateWorkspaceImage(ctx context.Context, r service.CreateImageRequest) (catalog.Image, error)
	CopyWorkspaceImage(ctx context.Context, r service.CopyImageRequest) (catalog.Image, error)
	ImportWorkspaceImage(ctx context.Context, r service.ImportImageRequest) (catalog.Image, error)
}

var (
	shWorkspaceImageName        = strPattern("WorkspaceImageName", ip(1), ip(64), `^[a-zA-Z0-9_./()\\-]+$`)
	shWorkspaceImageDescription = strPattern("WorkspaceImageDescription", ip(1), ip(256), `^[a-zA-Z0-9_./() -]+$`)

	shCreateWorkspaceImageRequest = structure("CreateWorkspaceImageRequest", []string{"Name", "Description", "WorkspaceId"},
		m("Name", shWorkspaceImageName),
		m("Description", shWorkspaceImageDescription),
		m("WorkspaceId", shWorkspaceID),
		m("Tags", shTagList),
	)
	shCopyWorkspaceImageRequest = structure("CopyWorkspaceImageRequest", []string{"Name", "SourceImageId", "SourceRegion"},
		m("Name", shWorkspaceImageName),
		m("Description", shWorkspaceImageDescription),
		m("SourceImageId", shImageID),
		m("SourceRegion", strPattern("Region", ip(1), ip(31), `^[-0-9a-z]{1,31}$`)),
		m("Tags", shTagList),
	)
	shIngestionProcess            = strEnum("WorkspaceImageIngestionProcess", "BYOL_REGULAR", "BYOL_GRAPHICS", "BYOL_GRAPHICSPRO", "BYOL_GRAPHICS_G4DN", "BYOL_REGULAR_WSP", "BYOL_REGULAR_BYOP", "BYOL_GRAPHICS_G4DN_BYOP")
	shImportWorkspaceImageRequest = structure("ImportWorkspaceImageRequest", []string{"Ec2ImageId", "IngestionProcess", "ImageName", "ImageDescription"},
		m("Ec2ImageId", strPattern("Ec2ImageId", nil, nil, `^ami\-([a-f0-9]{8}|[a-f0-9]{17})$`)),
		m("IngestionProcess", shIngestionProcess),
		m("ImageName", shWorkspaceImageName),
		m("ImageDescription", shWorkspaceImageDescription),
		m("Tags", shTagList),
		m("Applications", list("ApplicationList", strEnum("Application", "Microsoft_Office_2016", "Microsoft_Office_2019"), ip(1), ip(5))),
	)
	// hostd's own import: AWS's request with Source (a path on this host or an http(s)
	// URL) where AWS has an EC2 image id, and BaseImageId, the image whose kernel and
	// initramfs (the guest agent) an imported disk boots with.
	shImportImageRequest = structure("ImportImageRequest", []string{"Source", "IngestionProcess", "ImageName", "ImageDescription"},
		m("Source", strLen("ImageSource", ip(1), ip(4096))),
		m("IngestionProcess", shIngestionProcess),
		m("ImageName", shWorkspaceImageName),
		m("ImageDescription", shWorkspaceImageDescription),
		m("BaseImageId", shImageID),
		m("Tags", shTagList),
	)
)

type importWorkspaceImageRequest struct {
	Ec2ImageId       string    `json:"Ec2ImageId"`
	IngestionProcess string    `json:"IngestionProcess"`
	ImageName        string    `json:"ImageName"`
	ImageDescription string    `json:"ImageDescription"`
	Tags             []wireTag `json:"Tags,omitempty"`
	Applications     []string  `json:"Applications,omitempty"`
}

// importWorkspaceImage is AWS's import of an EC2 image, which this host does not have.
func importWorkspaceImage(ctx context.Context, svc Service, r *importWorkspaceImageRequest) (any, error) {
	return nil, catalog.Errorf(catalog.ResourceNotFound, "EC2 image %s: this host has no EC2 images; import a qcow2 or raw disk image (a path on the host or an http(s) URL) with hostd's own %sImportImage and its Source member (hostd images import --source ...)", r.Ec2ImageId, OwnTargetPrefix)
}

type importImageRequest struct {
	Source           string    `json:"Source"`
	IngestionProcess string    `json:"IngestionProcess"`
	ImageName        string    `json:"ImageName"`
	ImageDescription string    `json:"ImageDescription"`
	BaseImageId      *string   `json:"BaseImageId,omitempty"`
	Tags             []wireTag `json:"Tags,omitempty"`
}

func importImage(ctx context.Context, svc Service, r *importImageRequest) (any, error) {
	img, err := svc.ImportWorkspaceImage(ctx, service.ImportImageRequest{Source: r.Source, IngestionProcess: r.IngestionProcess,
		Name: r.ImageName, Description: r.ImageDescription, BaseImage: deref(r.BaseImageId), Tags: toTags(r.Tags)})
	if err != nil {
		return nil, err
	}
	return imageIDResult{ImageId: img.ID}, nil
}

type createWorkspaceImageRequest struct {
	Name        string    `json:"Name"`
	Description string    `json:"Description"`
	WorkspaceId string    `json:"WorkspaceId"`
	Tags        []wireTag `json:"Tags,omitempty"`
}

func createWorkspaceImage(ctx context.Context, svc Service, r *createWorkspaceImageRequest) (any, error) {
	img, err := svc.CreateWorkspaceImage(ctx, service.CreateImageRequest{Name: r.Name, Description: r.Description,
		WorkspaceID: r.WorkspaceId, Tags: toTags(r.Tags)})
	if err != nil {
		return nil, err
	}
	w := toWireImage(img)
	// CreateWorkspaceImageResult has no error fields.
	w.ErrorCode, w.ErrorMessage = "", ""
	return w, nil
}

type copyWorkspaceImageRequest struct {
	Name          string    `json:"Name"`
	Description   *string   `json:"Description,omitempty"`
	SourceImageId string    `json:"SourceImageId"`
	SourceRegion  string    `json:"SourceRegion"`
	Tags          []wireTag `json:"Tags,omitempty"`
}

type imageIDResult struct {
	ImageId string `json:"ImageId"`
}

func copyWorkspaceImage(ctx context.Context, svc Service, r *copyWorkspaceImageRequest) (any, error) {
	// A host is one Region: its images are copied on it, and no other Region is reachable.
	if region := regionOf(ctx); r.SourceRegion != region {
		return nil, catalog.Errorf(catalog.InvalidParameterValues, "SourceRegion %s: this host is Region %s and copies only its own images; copy between hosts is not supported yet", quote(r.SourceRegion), region)
	}
	img, err := svc.CopyWorkspaceImage(ctx, service.CopyImageRequest{Name: r.Name, Description: deref(r.Description),
		SourceImageID: r.SourceImageId, Tags: toTags(r.Tags)})
	if err != nil {
		return nil, err
	}
	return imageIDResult{ImageId: img.ID}, nil
}

type regionKey struct{}

// regionOf is the Region the server answers as.
func regionOf(ctx context.Context) string {
	if r, ok := ctx.Value(regionKey{}).(string); ok {
		return r
	}
	return ""
}
