// Package certs gives a TLS server (zeroclient's broker and gateway, hostd's admin API) its
// identity: the operator's PEM certificate and key, or a CA and a server certificate made
// once and kept in a directory. Clients are given ca.pem to trust (zero clients take it as
// an uploaded certificate, TigerVNC as -X509CA, awscli as AWS_CA_BUNDLE); the server
// certificate names the configured names, the host name, localhost and every address the
// host has, so any address a client dials verifies. Only the server certificate is remade
// (when it nears expiry or misses a name): the CA clients pinned stays.
package certs

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
	"strings"
	"time"

	"deskhost/internal/atomicfile"
	"deskhost/internal/secretfile"
)

// Files in a self-signed directory.
const (
	CAFile   = "ca.pem"
	caKey    = "ca-key.pem"
	CertFile = "cert.pem"
	KeyFile  = "key.pem"
)

// ServerConfig is the TLS the broker and gateway accept: TLS 1.2 or later, and for 1.2
// only ECDHE suites with AEAD ciphers (TLS 1.3's suites are all ephemeral).
func ServerConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256, tls.CurveP384},
	}
}

// Load returns the certificate: from certFile/keyFile when given, else made (or reused)
// in dir for names.
func Load(certFile, keyFile, dir string, names []string) (tls.Certificate, error) {
	if certFile != "" || keyFile != "" {
		if certFile == "" || keyFile == "" {
			return tls.Certificate{}, errors.New("tls: a certificate file and a key file go together")
		}
		// The private key is a secret: owner-only, like every secret file.
		if err := secretfile.Check(keyFile); err != nil {
			return tls.Certificate{}, fmt.Errorf("tls: key: %w", err)
		}
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return tls.Certificate{}, fmt.Errorf("tls: %w", err)
		}
		return c, nil
	}
	if dir == "" {
		return tls.Certificate{}, errors.New("tls: no certificate configured and no directory to keep a self-signed one in")
	}
	return SelfSigned(dir, names, time.Now())
}

// SelfSigned returns the server certificate kept in dir, making the CA and the certificate
// when missing, expiring within 30 days, or not covering names.
func SelfSigned(dir string, names []string, now time.Time) (tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: %w", err)
	}
	dnsNames, ips := sans(names)
	if c, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)); err == nil {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && leaf.NotAfter.Sub(now) > 30*24*time.Hour && covers(leaf, dnsNames, ips) {
			return c, nil
		}
	}
	ca, caPriv, err := loadOrMakeCA(dir, now)
	if err != nil {
		return tls.Certificate{}, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: firstNonEmpty(host, "deskhost"), Organization: []string{"deskhost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(397 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: dnsNames, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &priv.PublicKey, caPriv)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls: make certificate: %w", err)
	}
	// The key first: a crash between the two leaves a pair that does not match, which the
	// next start remakes, never a new certificate with the old key.
	kb, _ := x509.MarshalECPrivateKey(priv)
	if err := writePEM(filepath.Join(dir, KeyFile), "EC PRIVATE KEY", kb); err != nil {
		return tls.Certificate{}, err
	}
	if err := writePEM(filepath.Join(dir, CertFile), "CERTIFICATE", der); err != nil {
		return tls.Certificate{}, err
	}
	return tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
}

func loadOrMakeCA(dir string, now time.Time) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	if c, err := tls.LoadX509KeyPair(filepath.Join(dir, CAFile), filepath.Join(dir, caKey)); err == nil {
		if ca, err := x509.ParseCertificate(c.Certificate[0]); err == nil && ca.NotAfter.Sub(now) > 400*24*time.Hour {
			if k, ok := c.PrivateKey.(*ecdsa.PrivateKey); ok {
				return ca, k, nil
			}
		}
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: "deskhost CA " + firstNonEmpty(host, ""), Organization: []string{"deskhost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLenZero: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		return nil, nil, fmt.Errorf("tls: make CA: %w", err)
	}
	kb, _ := x509.MarshalECPrivateKey(priv)
	if err := writePEM(filepath.Join(dir, caKey), "EC PRIVATE KEY", kb); err != nil {
		return nil, nil, err
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", der); err != nil {
		return nil, nil, err
	}
	ca, err := x509.ParseCertificate(der)
	return ca, priv, err
}

// sans is names plus the host name, localhost and the host's addresses.
func sans(names []string) ([]string, []net.IP) {
	var dns []string
	var ips []net.IP
	add := func(n string) {
		if ip := net.ParseIP(n); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if n != "" && !slices.Contains(dns, n) {
			dns = append(dns, n)
		}
	}
	for _, n := range names {
		add(n)
	}
	if h, err := os.Hostname(); err == nil {
		add(h)
	}
	add("localhost")
	add("127.0.0.1")
	add("::1")
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				add(n.IP.String())
			}
		}
	}
	return dns, ips
}

func covers(c *x509.Certificate, dns []string, ips []net.IP) bool {
	for _, d := range dns {
		if !slices.Contains(c.DNSNames, d) {
			return false
		}
	}
	for _, ip := range ips {
		if !slices.ContainsFunc(c.IPAddresses, ip.Equal) {
			return false
		}
	}
	return true
}

// writePEM writes one PEM block atomically: keys readable by root only, certificates by
// anyone (clients are given ca.pem).
func writePEM(path, typ string, der []byte) error {
	perm := os.FileMode(0o644)
	if strings.HasSuffix(typ, "PRIVATE KEY") {
		perm = 0o600
	}
	if err := atomicfile.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), perm); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return nil
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Leaf is a certificate to issue under a CA (Issue).
type Leaf struct {
	CommonName string
	// Names are the DNS names and IP addresses a server certificate covers.
	Names []string
	// Server and Client choose the extended key usages: etcd members are both (they serve
	// clients and dial their peers); a host that only reads and writes the store is a
	// client.
	Server, Client bool
	// Validity defaults to 397 days.
	Validity time.Duration
}

// Issue makes a key and a certificate for leaf, signed by the CA kept in caDir (made when
// missing, as SelfSigned's is), and writes them to certFile and keyFile. The CA's
// certificate is CAPath(caDir).
func Issue(caDir string, leaf Leaf, certFile, keyFile string, now time.Time) error {
	if !leaf.Server && !leaf.Client {
		return errors.New("tls: a certificate for neither server nor client use")
	}
	ca, err := OpenCA(caDir, now)
	if err != nil {
		return err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := ca.Sign(leaf, &priv.PublicKey, now)
	if err != nil {
		return err
	}
	kb, _ := x509.MarshalECPrivateKey(priv)
	if err := os.MkdirAll(filepath.Dir(keyFile), 0o700); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(certFile), 0o700); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", kb); err != nil {
		return err
	}
	return writePEM(certFile, "CERTIFICATE", der)
}

// CA is a certificate authority in memory: a fleet's, which signs the certificates hosts
// present to each other (a joining host sends only its public key).
type CA struct {
	Cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// OpenCA is the CA kept in dir, made when missing (as SelfSigned's is).
func OpenCA(dir string, now time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	cert, key, err := loadOrMakeCA(dir, now)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, key: key}, nil
}

// CAFiles reads the CA kept in dir as PEM: its certificate and its key.
func CAFiles(dir string) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = os.ReadFile(filepath.Join(dir, CAFile)); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	if keyPEM, err = os.ReadFile(filepath.Join(dir, caKey)); err != nil {
		return nil, nil, fmt.Errorf("tls: %w", err)
	}
	return certPEM, keyPEM, nil
}

// ParseCA reads a CA from its certificate and key in PEM.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	cert, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("tls: CA: %w", err)
	}
	k, ok := c.PrivateKey.(*ecdsa.PrivateKey)
	if !ok || !cert.IsCA {
		return nil, errors.New("tls: CA: not an ECDSA certificate authority")
	}
	return &CA{Cert: cert, key: k}, nil
}

// Sign issues a certificate (DER) for leaf and the public key pub, signed by the CA.
func (ca *CA) Sign(leaf Leaf, pub any, now time.Time) ([]byte, error) {
	if !leaf.Server && !leaf.Client {
		return nil, errors.New("tls: a certificate for neither server nor client use")
	}
	caCert, caPriv := ca.Cert, ca.key
	if leaf.Validity <= 0 {
		leaf.Validity = 397 * 24 * time.Hour
	}
	var eku []x509.ExtKeyUsage
	if leaf.Server {
		eku = append(eku, x509.ExtKeyUsageServerAuth)
	}
	if leaf.Client {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	var dns []string
	var ips []net.IP
	for _, n := range leaf.Names {
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
		} else if n != "" {
			dns = append(dns, n)
		}
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(), Subject: pkix.Name{CommonName: leaf.CommonName, Organization: []string{"deskhost"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(leaf.Validity),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: eku,
		DNSNames: dns, IPAddresses: ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, pub, caPriv)
	if err != nil {
		return nil, fmt.Errorf("tls: issue certificate for %s: %w", leaf.CommonName, err)
	}
	return der, nil
}

// WritePEM writes a certificate (DER) or an EC private key to path atomically: a key
// readable by root only, a certificate by anyone.
func WritePEM(path string, der []byte, key bool) error {
	typ := "CERTIFICATE"
	if key {
		typ = "EC PRIVATE KEY"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("tls: %w", err)
	}
	return writePEM(path, typ, der)
}

// CAPath is the CA certificate kept in dir.
func CAPath(dir string) string { return filepath.Join(dir, CAFile) }
