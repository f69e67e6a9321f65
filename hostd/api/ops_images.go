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
)

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
