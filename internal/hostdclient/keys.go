package hostdclient

import "context"

// The key store's operations (hostd's own): the keys that encrypt WorkSpace volumes, which
// CreateWorkspaces' VolumeEncryptionKey names by id, alias/NAME or ARN.

// Key is one key of hostd's key store (never its material).
type Key struct {
	KeyId          string
	Arn            string
	Alias          string
	Description    string
	Enabled        bool
	CreationDate   float64 // epoch seconds
	Workspaces     int     // live WorkSpaces it encrypts
	WorkspaceLimit int     // the most it may encrypt
}

// CreateKeyInput names a new key; both members may be empty.
type CreateKeyInput struct {
	Alias       string `json:",omitempty"` // alias/NAME (or NAME)
	Description string `json:",omitempty"`
}

// KeyOutput is the key an operation made or changed.
type KeyOutput struct {
	Key Key
}

// CreateKey makes a new enabled key with fresh random material.
func (c *Client) CreateKey(ctx context.Context, in *CreateKeyInput) (*KeyOutput, error) {
	out := &KeyOutput{}
	return out, c.Call(ctx, DeskhostTarget+"CreateKey", in, out)
}

// DescribeKeysInput names one key (id, alias/NAME or ARN), or none for all.
type DescribeKeysInput struct {
	KeyId string `json:",omitempty"`
}

// DescribeKeysOutput lists keys.
type DescribeKeysOutput struct {
	Keys []Key
}

// DescribeKeys lists the keys, with the WorkSpaces each encrypts.
func (c *Client) DescribeKeys(ctx context.Context, in *DescribeKeysInput) (*DescribeKeysOutput, error) {
	out := &DescribeKeysOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DescribeKeys", in, out)
}

// KeyIDInput names one key: its id, alias/NAME or ARN.
type KeyIDInput struct {
	KeyId string
}

// EnableKey enables a key.
func (c *Client) EnableKey(ctx context.Context, in *KeyIDInput) (*KeyOutput, error) {
	out := &KeyOutput{}
	return out, c.Call(ctx, DeskhostTarget+"EnableKey", in, out)
}

// DisableKey disables a key: the WorkSpaces it encrypts no longer start, reboot, rebuild
// or restore, and it encrypts no new one.
func (c *Client) DisableKey(ctx context.Context, in *KeyIDInput) (*KeyOutput, error) {
	out := &KeyOutput{}
	return out, c.Call(ctx, DeskhostTarget+"DisableKey", in, out)
}
