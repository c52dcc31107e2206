package transport

import (
	"errors"
	"fmt"
)

// Sentinel errors. Backends carry them across the wire by Reason and rebuild
// them with ErrorFromReason, so errors.Is works on both sides.
var (
	ErrIncompatible    = errors.New("transport: incompatible peer")
	ErrUnauthenticated = errors.New("transport: invalid transfer token")
	ErrTokenExpired    = errors.New("transport: transfer grant expired")
	ErrUnknownTransfer = errors.New("transport: unknown transfer")
	ErrDuplicate       = errors.New("transport: transfer already exists")
	ErrStaleEpoch      = errors.New("transport: stale transfer epoch")
	ErrLeaseExpired    = errors.New("transport: lease expired")
	ErrCancelled       = errors.New("transport: transfer cancelled")
	ErrChecksum        = errors.New("transport: checksum mismatch")
	ErrDuplicateChunk  = errors.New("transport: duplicate or late chunk")
	ErrProtocol        = errors.New("transport: protocol violation")
	ErrExhausted       = errors.New("transport: no free blocks")
	ErrPeerLost        = errors.New("transport: peer connection lost")
	ErrTimeout         = errors.New("transport: timed out")
	ErrClosed          = errors.New("transport: closed")
	ErrInvalid         = errors.New("transport: invalid argument")
)

// reasons is the one table that names errors on the wire.
var reasons = []struct {
	reason string
	err    error
}{
	{"INCOMPATIBLE", ErrIncompatible},
	{"UNAUTHENTICATED", ErrUnauthenticated},
	{"TOKEN_EXPIRED", ErrTokenExpired},
	{"UNKNOWN_TRANSFER", ErrUnknownTransfer},
	{"DUPLICATE_TRANSFER", ErrDuplicate},
	{"STALE_EPOCH", ErrStaleEpoch},
	{"LEASE_EXPIRED", ErrLeaseExpired},
	{"CANCELLED", ErrCancelled},
	{"CHECKSUM", ErrChecksum},
	{"DUPLICATE_CHUNK", ErrDuplicateChunk},
	{"PROTOCOL", ErrProtocol},
	{"EXHAUSTED", ErrExhausted},
	{"PEER_LOST", ErrPeerLost},
	{"TIMEOUT", ErrTimeout},
	{"CLOSED", ErrClosed},
	{"INVALID", ErrInvalid},
}

// Reason names err's sentinel for the wire; "" when err wraps none of them.
func Reason(err error) string {
	for _, r := range reasons {
		if errors.Is(err, r.err) {
			return r.reason
		}
	}
	return ""
}

// ErrorFromReason rebuilds an error received from a peer. An unknown reason
// becomes ErrProtocol so a peer cannot make us report success.
func ErrorFromReason(reason, msg string) error {
	for _, r := range reasons {
		if r.reason == reason {
			return fmt.Errorf("%w (peer: %s)", r.err, msg)
		}
	}
	return fmt.Errorf("%w: peer reported unknown reason %q: %s", ErrProtocol, reason, msg)
}
