package fleet

import "time"

// JoinRequest is a host asking to join, as the fleet keeps it until the host has its
// credentials.
type JoinRequest struct {
	// Code is the join code: it binds the new host's public key to the fleet CA it saw
	// (JoinCode), and is what its console shows and an administrator approves.
	Code       string    `json:"code"`
	HardwareID string    `json:"hardwareId"`
	Name       string    `json:"name"`
	Addresses  Addresses `json:"addresses"`
	Capacity   Resources `json:"capacity"`
	// PublicKey is the new host's key (PKIX DER): its certificate is issued for it.
	PublicKey []byte    `json:"publicKey"`
	Requested time.Time `json:"requested"`
	// Approved is set by an administrator (or by a preapproval of the hardware id); HostID
	// is the id the host gets.
	Approved   bool      `json:"approved,omitempty"`
	ApprovedAt time.Time `json:"approvedAt,omitzero"`
	ApprovedBy string    `json:"approvedBy,omitempty"` // "administrator" or "preapproval"
	HostID     string    `json:"hostId,omitempty"`
}

// Preapproval lets a host with a hardware id join without a person approving it, once,
// until it expires.
type Preapproval struct {
	HardwareID string    `json:"hardwareId"`
	Created    time.Time `json:"created"`
	Expires    time.Time `json:"expires"`
}
