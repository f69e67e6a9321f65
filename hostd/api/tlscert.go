package api

import (
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"

	"deskhost/internal/certs"
)

// LoadOrCreateCertificate returns the admin API's HTTPS certificate and the path of the
// PEM file clients trust (AWS_CA_BUNDLE=path, hostd --ca-file path). With certFile and
// keyFile set (hostd.api.tlsCert and tlsKey) it loads them, and clients trust certFile.
// With both empty it uses a CA and server certificate kept in dir (internal/certs), naming
// the listen address, the host name, localhost and the host's addresses; clients trust
// dir/ca.pem, which stays the same when the server certificate is remade.
func LoadOrCreateCertificate(certFile, keyFile, dir, listen string) (tls.Certificate, string, error) {
	var names []string
	if host, _, err := net.SplitHostPort(listen); err == nil && host != "" {
		if ip := net.ParseIP(host); ip == nil || !ip.IsUnspecified() {
			names = append(names, host)
		}
	}
	cert, err := certs.Load(certFile, keyFile, dir, names)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("admin api %w", err)
	}
	if certFile != "" {
		return cert, certFile, nil
	}
	return cert, filepath.Join(dir, certs.CAFile), nil
}
