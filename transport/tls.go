package transport

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
)

// TLSConfig names the PEM files of a node's mutual-TLS identity. Both sides
// present a certificate signed by the cluster CA and verify the other's.
type TLSConfig struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// Validate checks that every file is named.
func (c TLSConfig) Validate() error {
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return fmt.Errorf("%w: TLS needs cert, key and CA files", ErrInvalid)
	}
	return nil
}

// Server returns a config that requires and verifies client certificates.
func (c TLSConfig) Server() (*tls.Config, error) {
	cert, pool, err := c.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

// Client returns a config that presents the node certificate and verifies
// the server against the CA.
func (c TLSConfig) Client() (*tls.Config, error) {
	cert, pool, err := c.load()
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		MinVersion:   tls.VersionTLS13,
	}, nil
}

func (c TLSConfig) load() (tls.Certificate, *x509.CertPool, error) {
	if err := c.Validate(); err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("transport: loading TLS key pair: %w", err)
	}
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("transport: reading CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("%w: no certificate in CA file %s", ErrInvalid, c.CAFile)
	}
	return cert, pool, nil
}
