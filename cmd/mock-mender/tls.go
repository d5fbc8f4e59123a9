package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"

	"github.com/tether-agent/tether/internal/mockserver"
)

// serveTLS builds the server's TLS configuration from the serve flags: nil
// for plain HTTP, the given pair, or a fresh self-signed certificate
// written to selfSignedDir. Only the certificate's paths and public
// fingerprints are logged, never the key.
func serveTLS(log *slog.Logger, listen string, allowed []string, certFile, keyFile, selfSignedDir string) (*tls.Config, error) {
	var (
		cert tls.Certificate
		err  error
	)
	switch {
	case selfSignedDir != "" && (certFile != "" || keyFile != ""):
		return nil, errors.New("--tls-self-signed and --tls-cert/--tls-key exclude each other")
	case selfSignedDir != "":
		hosts, err := certHosts(listen, allowed)
		if err != nil {
			return nil, err
		}
		var path string
		if cert, path, err = mockserver.WriteSelfSigned(selfSignedDir, hosts); err != nil {
			return nil, fmt.Errorf("--tls-self-signed: %w", err)
		}
		sum, spki, _ := mockserver.CertificateFingerprints(cert)
		log.Info("self-signed TLS certificate made; trust this file in clients", "cert", path,
			"key", filepath.Join(selfSignedDir, mockserver.SelfSignedKeyFile), "hosts", hosts, "sha256", sum, "spki_sha256", spki)
		return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
	case certFile != "" || keyFile != "":
		if certFile == "" || keyFile == "" {
			return nil, errors.New("--tls-cert and --tls-key go together")
		}
		if cert, err = tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			// The error names the files and what is wrong with them,
			// never the key's bytes.
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		sum, spki, err := mockserver.CertificateFingerprints(cert)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		log.Info("serving TLS", "cert", certFile, "sha256", sum, "spki_sha256", spki)
		return &tls.Config{Certificates: []tls.Certificate{cert}}, nil
	}
	return nil, nil
}

// certHosts lists what a self-signed certificate must name: the listen
// address (every address of the machine when it is unspecified, as the
// server is then reachable on each), localhost and the allowed names,
// i.e. every name the server answers to that a certificate can carry.
func certHosts(listen string, allowed []string) ([]string, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	hosts := []string{"localhost"}
	ip := net.ParseIP(host)
	switch {
	case host == "" || (ip != nil && ip.IsUnspecified()):
		hosts = append(hosts, "127.0.0.1", "::1")
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return nil, fmt.Errorf("listing the machine's addresses for the certificate: %w", err)
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
				hosts = append(hosts, n.IP.String())
			}
		}
	default:
		hosts = append(hosts, host)
	}
	return append(hosts, allowed...), nil
}
