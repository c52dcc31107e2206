// Package token mints and verifies KV-transfer tokens.
//
// A placement authorises one KV transfer: the coordinator leader signs the transfer id, its Raft
// term (the fencing token), the decode node that will receive the blocks and an expiry with
// HMAC-SHA256 under a secret shared by the cluster. The transport on the decode worker verifies the
// token before it writes a single byte, so a stale placement from a deposed leader (older term), a
// token replayed against another worker, or an expired one is refused. The fields are encoded with
// length prefixes so no two claim sets share a signed message.
//
// The signed message is exactly the transport's grant (transport.IssueGrant): domain
// "tandem-kv-grant-v1", then transfer id and decode node each with a big-endian u64 length prefix,
// then the term and the expiry (Unix nanoseconds) as big-endian u64. The decoded token is the
// grant's MAC, so the decode worker's transport verifies the coordinator's tokens unchanged (a test
// in gateway checks the two stay byte-identical).
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Sentinel errors.
var (
	ErrInvalid    = errors.New("token: invalid transfer token")
	ErrExpired    = errors.New("token: transfer token expired")
	ErrStaleTerm  = errors.New("token: transfer token from an older term")
	ErrWeakSecret = errors.New("token: cluster secret shorter than 32 bytes")
)

// MinSecretLen is the shortest accepted cluster secret (256 bits, as the transport requires).
const MinSecretLen = 32

// Claims are what a token vouches for.
type Claims struct {
	TransferID string
	Term       uint64
	DecodeNode string
	Expiry     time.Time
}

const domain = "tandem-kv-grant-v1"

func message(c Claims) []byte {
	b := make([]byte, 0, len(domain)+len(c.TransferID)+len(c.DecodeNode)+32)
	b = append(b, domain...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(c.TransferID)))
	b = append(b, c.TransferID...)
	b = binary.BigEndian.AppendUint64(b, uint64(len(c.DecodeNode)))
	b = append(b, c.DecodeNode...)
	b = binary.BigEndian.AppendUint64(b, c.Term)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Expiry.UnixNano()))
	return b
}

// MAC decodes a token into the raw HMAC bytes the transport carries as a grant's token.
func MAC(tok string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) != sha256.Size {
		return nil, fmt.Errorf("%w: malformed", ErrInvalid)
	}
	return b, nil
}

// Sign returns the token for c.
func Sign(secret []byte, c Claims) (string, error) {
	if len(secret) < MinSecretLen {
		return "", ErrWeakSecret
	}
	m := hmac.New(sha256.New, secret)
	m.Write(message(c))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)), nil
}

// VerifyTransferToken checks tok against the claims the transport received with the transfer.
// minTerm is the highest coordinator term the verifier has seen (0 to skip the fencing check);
// a token from an older term is refused.
func VerifyTransferToken(secret []byte, tok string, c Claims, minTerm uint64, now time.Time) error {
	if len(secret) < MinSecretLen {
		return ErrWeakSecret
	}
	got, err := MAC(tok)
	if err != nil {
		return err
	}
	m := hmac.New(sha256.New, secret)
	m.Write(message(c))
	if !hmac.Equal(got, m.Sum(nil)) {
		return fmt.Errorf("%w: signature mismatch", ErrInvalid)
	}
	if !now.Before(c.Expiry) {
		return fmt.Errorf("%w: at %s", ErrExpired, c.Expiry.UTC().Format(time.RFC3339Nano))
	}
	if c.Term < minTerm {
		return fmt.Errorf("%w: term %d < %d", ErrStaleTerm, c.Term, minTerm)
	}
	return nil
}
