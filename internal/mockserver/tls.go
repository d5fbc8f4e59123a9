package mockserver

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files WriteSelfSigned writes into its directory.
const (
	SelfSignedCertFile = "cert.pem"
	SelfSignedKeyFile  = "key.pem"
)

// SelfSignedValidity is how long a certificate of SelfSignedCertificate is
// valid: long enough for a demo that runs for weeks, short enough that a
// forgotten copy in a trust store expires.
const SelfSignedValidity = 90 * 24 * time.Hour

// serverTLSConfig is the listener's configuration: the caller's, with
// HTTP/1.1 as the only application protocol unless the caller chose. The
// websockets need HTTP/1.1 (no RFC 8441 here), and net/http would
// otherwise leave ALPN empty on a plain tls.Listener anyway.
func serverTLSConfig(c *tls.Config) *tls.Config {
	c = c.Clone()
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{"http/1.1"}
	}
	if c.MinVersion == 0 {
		c.MinVersion = tls.VersionTLS12
	}
	return c
}

// SelfSignedCertificate makes an ECDSA P-256 certificate, signed by its own
// key, for hosts (IP literals and DNS names; at least one). It is not a CA
// (BasicConstraints CA:false): a client that trusts it trusts this server
// and nothing its key could sign. The returned certificate has Leaf set.
func SelfSignedCertificate(hosts []string) (tls.Certificate, error) {
	if len(hosts) == 0 {
		return tls.Certificate{}, errors.New("self-signed certificate: no host names")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: serial: %w", err)
	}
	// Clocks of the client and the server may disagree a little.
	now := time.Now().Add(-time.Hour)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hosts[0], Organization: []string{"tether mock-mender (self-signed)"}},
		NotBefore:             now,
		NotAfter:              now.Add(SelfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	seen := make(map[string]bool)
	for _, h := range hosts {
		h = normalHost(h)
		if h == "" || seen[h] {
			continue
		}
		seen[h] = true
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("self-signed certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// WriteSelfSigned makes a fresh certificate with SelfSignedCertificate and
// writes it to dir/cert.pem (0644: what clients are told to trust) and its
// key to dir/key.pem (0600; pass both to a later run to keep the same
// certificate). dir is created 0700 if missing. Each file is written to a
// temporary name and renamed into place, so a reader never sees half a
// file and a symlink planted at the name is replaced, not followed.
func WriteSelfSigned(dir string, hosts []string) (cert tls.Certificate, certPath string, err error) {
	cert, err = SelfSignedCertificate(hosts)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return tls.Certificate{}, "", fmt.Errorf("self-signed certificate: key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, "", fmt.Errorf("self-signed certificate: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(filepath.Join(dir, SelfSignedKeyFile), keyPEM, 0o600); err != nil {
		return tls.Certificate{}, "", err
	}
	certPath = filepath.Join(dir, SelfSignedCertFile)
	if err := writeFileAtomic(certPath, CertificatePEM(cert), 0o644); err != nil {
		return tls.Certificate{}, "", err
	}
	return cert, certPath, nil
}

// CertificatePEM encodes the certificate chain of c as PEM.
func CertificatePEM(c tls.Certificate) []byte {
	var out []byte
	for _, der := range c.Certificate {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// CertificateFingerprints returns the SHA-256 of the leaf certificate (hex,
// as browsers show it) and of its public key (SubjectPublicKeyInfo, base64:
// what Chromium's --ignore-certificate-errors-spki-list takes). Both are
// public.
func CertificateFingerprints(c tls.Certificate) (certSHA256, spkiSHA256 string, err error) {
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return "", "", errors.New("no certificate")
		}
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return "", "", fmt.Errorf("parse certificate: %w", err)
		}
	}
	cs := sha256.Sum256(leaf.Raw)
	ks := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(cs[:]), base64.StdEncoding.EncodeToString(ks[:]), nil
}

// writeFileAtomic writes data to a new temporary file in path's directory
// with mode perm and renames it to path.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	// CreateTemp makes the file 0600; widen it (the certificate) only
	// once it is ours.
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
