package api

import (
	"context"

	"deskhost/hostd/service"
)

// The key store's operations (hostd's own, under OwnTargetPrefix): AWS keeps volume
// encryption keys in KMS; deskhost keeps them in hostd's key store (hostd/keystore), and
// CreateWorkspaces' VolumeEncryptionKey names one of them by id, alias/NAME or ARN.

// KeysService is the key store part of what the API calls (*service.Service).
type KeysService interface {
	CreateKey(ctx context.Context, alias, description string) (service.KeyInfo, error)
	DescribeKeys(ctx context.Context, ref string) ([]service.KeyInfo, error)
	SetKeyEnabled(ctx context.Context, ref string, enabled bool) (service.KeyInfo, error)
}

var (
	shKeyRef           = strLen("KeyReference", ip(1), ip(2048))
	shCreateKeyRequest = structure("CreateKeyRequest", nil,
		m("Alias", strLen("KeyAlias", ip(1), ip(256))),
		m("Description", strLen("KeyDescription", ip(0), ip(8192))),
	)
	shDescribeKeysRequest = structure("DescribeKeysRequest", nil, m("KeyId", shKeyRef))
	shKeyIDRequest        = structure("KeyIdRequest", []string{"KeyId"}, m("KeyId", shKeyRef))
)

func init() {
	ownOperations["CreateKey"] = op(shCreateKeyRequest, createKey)
	ownOperations["DescribeKeys"] = op(shDescribeKeysRequest, describeKeys)
	ownOperations["EnableKey"] = op(shKeyIDRequest, enableKey)
	ownOperations["DisableKey"] = op(shKeyIDRequest, disableKey)
}

type createKeyRequest struct {
	Alias       *string `json:"Alias,omitempty"`
	Description *string `json:"Description,omitempty"`
}

type describeKeysRequest struct {
	KeyId *string `json:"KeyId,omitempty"`
}

type keyIDRequest struct {
	KeyId string `json:"KeyId"`
}

// WireKey is one key as the key store's operations answer: never its material.
type WireKey struct {
	KeyId          string
	Arn            string
	Alias          string `json:",omitempty"`
	Description    string `json:",omitempty"`
	Enabled        bool
	CreationDate   float64 // epoch seconds, as AWS's timestamps
	Workspaces     int     // live WorkSpaces it encrypts
	WorkspaceLimit int     // the most it may encrypt (the guide's 500)
}

func toWireKey(k service.KeyInfo) WireKey {
	return WireKey{KeyId: k.ID, Arn: k.ARN, Alias: k.Alias, Description: k.Description, Enabled: k.Enabled,
		CreationDate: float64(k.Created), Workspaces: k.Workspaces, WorkspaceLimit: k.Limit}
}

type keyResult struct{ Key WireKey }

func createKey(ctx context.Context, svc Service, r *createKeyRequest) (any, error) {
	k, err := svc.CreateKey(ctx, deref(r.Alias), deref(r.Description))
	if err != nil {
		return nil, err
	}
	return keyResult{toWireKey(k)}, nil
}

func describeKeys(ctx context.Context, svc Service, r *describeKeysRequest) (any, error) {
	ks, err := svc.DescribeKeys(ctx, deref(r.KeyId))
	if err != nil {
		return nil, err
	}
	out := struct{ Keys []WireKey }{Keys: []WireKey{}}
	for _, k := range ks {
		out.Keys = append(out.Keys, toWireKey(k))
	}
	return out, nil
}

func enableKey(ctx context.Context, svc Service, r *keyIDRequest) (any, error) {
	k, err := svc.SetKeyEnabled(ctx, r.KeyId, true)
	if err != nil {
		return nil, err
	}
	return keyResult{toWireKey(k)}, nil
}

func disableKey(ctx context.Context, svc Service, r *keyIDRequest) (any, error) {
	k, err := svc.SetKeyEnabled(ctx, r.KeyId, false)
	if err != nil {
		return nil, err
	}
	return keyResult{toWireKey(k)}, nil
}
