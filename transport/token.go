package transport

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"
)

// Grant is the placement's authorisation for one transfer to one receiver.
// The placement computes Token = HMAC-SHA256(cluster secret, transfer id,
// epoch, destination node, expiry); the receiver recomputes it with the same
// secret, so a transfer needs no registration round trip and nothing but the
// placement can mint one. Epoch is the placement's Raft term: it fences
// transfers of an older placement.
type Grant struct {
	TransferID string
	Epoch      uint64
	Expiry     time.Time
	Token      []byte
}

// MinSecretLen is the shortest cluster secret accepted (256 bits).
const MinSecretLen = 32

// maxTransferID bounds ids taken from the network.
const maxTransferID = 128

// IssueGrant signs a grant for transfer id at epoch, for destination node
// dest, valid until expiry.
func IssueGrant(secret []byte, transferID string, epoch uint64, dest string, expiry time.Time) (Grant, error) {
	if len(secret) < MinSecretLen {
		return Grant{}, fmt.Errorf("%w: cluster secret shorter than %d bytes", ErrInvalid, MinSecretLen)
	}
	g := Grant{TransferID: transferID, Epoch: epoch, Expiry: expiry}
	if err := g.validateShape(); err != nil {
		return Grant{}, err
	}
	g.Token = grantMAC(secret, g, dest)
	return g, nil
}

func (g Grant) validateShape() error {
	if g.TransferID == "" || len(g.TransferID) > maxTransferID {
		return fmt.Errorf("%w: transfer id must be 1..%d bytes", ErrInvalid, maxTransferID)
	}
	if g.Expiry.IsZero() {
		return fmt.Errorf("%w: grant without expiry", ErrInvalid)
	}
	return nil
}

// verifyGrant checks g's token for destination dest in constant time and
// that it has not expired at now.
func verifyGrant(secret []byte, g Grant, dest string, now time.Time) error {
	if err := g.validateShape(); err != nil {
		return err
	}
	if !hmac.Equal(g.Token, grantMAC(secret, g, dest)) {
		return fmt.Errorf("%w: transfer %q", ErrUnauthenticated, g.TransferID)
	}
	if !now.Before(g.Expiry) {
		return fmt.Errorf("%w: transfer %q expired at %s", ErrTokenExpired, g.TransferID, g.Expiry.UTC().Format(time.RFC3339Nano))
	}
	return nil
}

// grantMAC length-prefixes the variable fields so no two distinct claims
// share an encoding.
func grantMAC(secret []byte, g Grant, dest string) []byte {
	m := hmac.New(sha256.New, secret)
	var buf [8]byte
	m.Write([]byte("tandem-kv-grant-v1"))
	for _, s := range []string{g.TransferID, dest} {
		binary.BigEndian.PutUint64(buf[:], uint64(len(s)))
		m.Write(buf[:])
		m.Write([]byte(s))
	}
	binary.BigEndian.PutUint64(buf[:], g.Epoch)
	m.Write(buf[:])
	binary.BigEndian.PutUint64(buf[:], uint64(g.Expiry.UnixNano()))
	m.Write(buf[:])
	return m.Sum(nil)
}
