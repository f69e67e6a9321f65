package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"deskhost/internal/atomicfile"
)

// Names of the self-signed certificate's files in the directory LoadOrCreateCertificate keeps.
const (
	SelfSignedCertFile = "api-cert.pem"
	SelfSignedKeyFile  = "api-key.pem"
)

// selfSignedLifetime is how long a made certificate is valid; it is remade when less than
// selfSignedRenew is left.
const (
	selfSignedLifetime = 5 * 365 * 24 * time.Hour
	selfSignedRenew    = 30 * 24 * time.Hour
)

// LoadOrCreateCertificate returns the HTTPS certificate and the path of its PEM file (what
// clients pin, e.g. AWS_CA_BUNDLE=path). With certFile and keyFile set (hostd.api.tlsCert and
// tlsKey) it loads them. With both empty it uses a self-signed ECDSA P-256 certificate kept
// in dir: made once, and remade only if it is about to expire or does not name the listen
// address. Its subject alternative names are the listen address' IP or host name,
// localhost, 127.0.0.1, ::1, the host name, and, for a wildcard listen address, the host's
// interface addresses.
func LoadOrCreateCertificate(certFile, keyFile, dir, listen string) (tls.Certificate, string, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return tls.Certificate{}, "", errors.New("admin api TLS: tlsCert and tlsKey go together")
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, "", fmt.Errorf("admin api TLS: %w", err)
		}
		return cert, certFile, nil
	}
	if dir == "" {
		return tls.Certificate{}, "", errors.New("admin api TLS: no certificate configured and no directory to keep a self-signed one in")
	}
	dnsNames, ips, required := certNames(listen)
	certPath := filepath.Join(dir, SelfSignedCertFile)
	keyPath := filepath.Join(dir, SelfSignedKeyFile)
	if cert, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && certFits(cert, required) {
		return cert, certPath, nil
	}
	cert, err := makeSelfSigned(certPath, keyPath, dnsNames, ips)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("admin api TLS: %w", err)
	}
	return cert, certPath, nil
}

// certNames lists the names a new certificate for listen carries, and those a kept one
// must carry to be kept: localhost and a specific listen address. (The host name and a
// wildcard's interface addresses may change; the pinned certificate should not.)
func certNames(listen string) (dnsNames []string, ips []net.IP, required []string) {
	dnsNames = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	required = []string{"localhost"}
	addName := func(h string) {
		if h == "" {
			return
		}
		if ip := net.ParseIP(h); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
			return
		}
		if !slices.Contains(dnsNames, h) {
			dnsNames = append(dnsNames, h)
		}
	}
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		host = listen
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		if addrs, err := net.InterfaceAddrs(); err == nil {
			for _, a := range addrs {
				if n, ok := a.(*net.IPNet); ok && n.IP.IsGlobalUnicast() {
					addName(n.IP.String())
				}
			}
		}
	} else {
		addName(host)
		required = append(required, host)
	}
	if hn, err := os.Hostname(); err == nil {
		addName(hn)
	}
	return dnsNames, ips, required
}

// certFits reports whether a kept certificate still serves: valid for a while yet, and
// naming the required hosts.
func certFits(cert tls.Certificate, required []string) bool {
	if len(cert.Certificate) == 0 {
		return false
	}
	x, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil || time.Until(x.NotAfter) < selfSignedRenew {
		return false
	}
	for _, h := range required {
		if x.VerifyHostname(h) != nil {
			return false
		}
	}
	return true
}

func makeSelfSigned(certPath, keyPath string, dnsNames []string, ips []net.IP) (tls.Certificate, error) {
	if err := os.MkdirAll(filepath.Dir(certPath), 0o700); err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	cn := "deskhost admin API"
	if hn, err := os.Hostname(); err == nil {
		cn += " " + hn
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn, Organization: []string{"deskhost"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		// A CA certificate that is its own issuer, so that clients can trust it directly as
		// their CA bundle (AWS_CA_BUNDLE, --ca-bundle, --ca-file).
		IsCA:        true,
		DNSNames:    dnsNames,
		IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key first: a certificate file without its key is never left behind.
	if err := atomicfile.WriteFile(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.WriteFile(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}
