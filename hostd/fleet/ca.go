package fleet

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"errors"
	"fmt"
	"strings"
	"time"

	"deskhost/hostd/store"
	"deskhost/internal/catalog"
	"deskhost/internal/certs"
)

// codeLen is a join code's length in base32 characters: 60 bits. A host between the new
// host and the fleet would have to find a CA of its own whose code for the new host's key
// equals the real fleet's (2^60 tries, while the join waits) to be approved in its place.
const codeLen = 12

var codeEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// JoinCode is the code a new host shows and an administrator approves: a hash of the
// fleet CA's certificate as the new host saw it and of the new host's public key. The
// fleet computes it from its own CA and the key the request carries, so the two agree
// only if the new host talks to this fleet and the fleet to this host: approving the code
// the console shows approves exactly that host, with that key, under that CA.
func JoinCode(caDER, publicKeyDER []byte) string {
	h := sha256.New()
	h.Write([]byte("deskhost join v1\x00"))
	h.Write(caDER)
	h.Write([]byte{0})
	h.Write(publicKeyDER)
	return codeEncoding.EncodeToString(h.Sum(nil))[:codeLen]
}

// FormatCode writes a code in groups of four, as consoles show it.
func FormatCode(c string) string {
	var parts []string
	for i := 0; i < len(c); i += 4 {
		parts = append(parts, c[i:min(i+4, len(c))])
	}
	return strings.Join(parts, "-")
}

// NormalizeCode reads a code as an administrator types it (any case, with or without
// dashes and spaces).
func NormalizeCode(s string) (string, error) {
	c := strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(s))
	if len(c) != codeLen {
		return "", catalog.Errorf(catalog.InvalidParameterValues, "join code %q: want %d letters and digits, as the new host's console shows (e.g. ABCD-EFGH-JKLM)", s, codeLen)
	}
	if _, err := codeEncoding.DecodeString(c + strings.Repeat("A", 4)); err != nil || strings.ContainsAny(c, "0189") {
		return "", catalog.Errorf(catalog.InvalidParameterValues, "join code %q: only the letters A–Z and the digits 2–7 occur in join codes", s)
	}
	return c, nil
}

// Fingerprint is a certificate's SHA-256 fingerprint, "sha256:hex": how an operator pins
// the fleet CA on a host that joins unattended.
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return fmt.Sprintf("sha256:%x", sum)
}

// PutCA stores the fleet CA (certificate and key, PEM) and the fleet's id: every host can
// then sign the certificate of a host whose join was approved. The store is readable only
// with a certificate the CA signed (mutual TLS), and its key stays in the members' data
// directories on /perm (root only), as every other secret of the catalog does.
func PutCA(st store.Store, fleetID string, certPEM, keyPEM []byte) error {
	return st.Update(func(tx store.Tx) error {
		if _, err := tx.Get(Secrets, keyCACert); err == nil {
			return errors.New("fleet: the store already has a fleet CA")
		} else if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		for k, v := range map[string][]byte{keyCACert: certPEM, keyCAKey: keyPEM, keyFleetID: []byte(fleetID)} {
			if err := tx.Put(Secrets, k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// GetCA reads the fleet CA from the store.
func GetCA(st store.Store) (*certs.CA, string, error) {
	var certPEM, keyPEM, id []byte
	err := st.View(func(tx store.Tx) error {
		var err error
		if certPEM, err = tx.Get(Secrets, keyCACert); err != nil {
			return err
		}
		if keyPEM, err = tx.Get(Secrets, keyCAKey); err != nil {
			return err
		}
		id, err = tx.Get(Secrets, keyFleetID)
		return err
	})
	if errors.Is(err, store.ErrNotFound) {
		return nil, "", errors.New("fleet: the store has no fleet CA (this store was not made by a fleet's first host)")
	}
	if err != nil {
		return nil, "", fmt.Errorf("fleet: read the fleet CA: %w", err)
	}
	ca, err := certs.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, "", fmt.Errorf("fleet: %w", err)
	}
	return ca, string(id), nil
}

// HostCert signs a host's certificate: its id as the common name, its addresses as its
// names, good for serving (its etcd member, its fleet port) and as a client (the store,
// its peers).
func HostCert(ca *certs.CA, hostID string, names []string, publicKeyDER []byte, now time.Time) ([]byte, error) {
	pub, err := x509.ParsePKIXPublicKey(publicKeyDER)
	if err != nil {
		return nil, fmt.Errorf("fleet: the host's public key: %w", err)
	}
	return ca.Sign(certs.Leaf{CommonName: hostID, Names: append(names, "localhost", "127.0.0.1"), Server: true, Client: true}, pub, now)
}
