package transporttest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/tandemserve/tandem/transport"
)

// PKI is a throwaway certificate authority written into a directory.
type PKI struct {
	Dir    string
	CAFile string
	key    *ecdsa.PrivateKey
	cert   *x509.Certificate
}

// NewPKI creates a CA named name in dir.
func NewPKI(dir, name string) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CAFile: filepath.Join(dir, name+"-ca.pem"), key: key, cert: cert}
	return p, writePEM(p.CAFile, "CERTIFICATE", der)
}

// Issue makes a certificate for node (valid for loopback as a server and as
// a client) and returns its TLS config paths.
func (p *PKI) Issue(node string) (transport.TLSConfig, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return transport.TLSConfig{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return transport.TLSConfig{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: node},
		DNSNames:     []string{"localhost", node},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		return transport.TLSConfig{}, err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return transport.TLSConfig{}, err
	}
	cfg := transport.TLSConfig{
		CertFile: filepath.Join(p.Dir, node+".pem"),
		KeyFile:  filepath.Join(p.Dir, node+"-key.pem"),
		CAFile:   p.CAFile,
	}
	if err := writePEM(cfg.CertFile, "CERTIFICATE", der); err != nil {
		return transport.TLSConfig{}, err
	}
	return cfg, writePEM(cfg.KeyFile, "EC PRIVATE KEY", kder)
}

func writePEM(path, typ string, der []byte) error {
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("transporttest: %w", err)
	}
	return nil
}
