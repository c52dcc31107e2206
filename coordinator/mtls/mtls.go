// Package mtls loads the certificates that every Tandem control-plane connection uses: Raft between
// coordinators, gRPC from workers and tandemctl. Both sides present a certificate signed by the
// cluster CA and verify the other's, so a process without a cluster certificate can neither join
// Raft nor call the API.
package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// ErrConfig reports unusable certificate settings.
var ErrConfig = errors.New("mtls: invalid configuration")

// Files names PEM files. All three are needed for mutual TLS.
type Files struct {
	CertFile string
	KeyFile  string
	CAFile   string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CertFile != "" || f.KeyFile != "" || f.CAFile != "" }

// Load returns a server config that requires and verifies client certificates and a client config
// that presents ours and verifies the server against the CA.
func Load(f Files) (server, client *tls.Config, err error) {
	if f.CertFile == "" || f.KeyFile == "" || f.CAFile == "" {
		return nil, nil, fmt.Errorf("%w: cert, key and CA files are all required", ErrConfig)
	}
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: key pair: %w", ErrConfig, err)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: CA: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, nil, fmt.Errorf("%w: CA file %s holds no certificate", ErrConfig, f.CAFile)
	}
	return Configs(cert, pool), clientOnly(cert, pool), nil
}

// Configs builds the pair from an in-memory certificate and CA pool (tests).
func Configs(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		RootCAs:      pool,
	}
}

func clientOnly(cert tls.Certificate, pool *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
}

// LoadClient loads a client-side config: CA only (server verification) or CA plus a client
// certificate (mutual TLS).
func LoadClient(f Files) (*tls.Config, error) {
	if f.CAFile == "" {
		return nil, fmt.Errorf("%w: CA file required", ErrConfig)
	}
	caPEM, err := os.ReadFile(f.CAFile)
	if err != nil {
		return nil, fmt.Errorf("%w: CA: %w", ErrConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("%w: CA file %s holds no certificate", ErrConfig, f.CAFile)
	}
	c := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if f.CertFile != "" || f.KeyFile != "" {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w: key pair: %w", ErrConfig, err)
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
