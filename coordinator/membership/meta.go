package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/hashicorp/memberlist"
)

// Sentinel errors.
var (
	ErrMetaTooLarge = errors.New("membership: node metadata exceeds 512 bytes")
	ErrBadMeta      = errors.New("membership: malformed node metadata")
	ErrConfig       = errors.New("membership: invalid config")
	ErrClosed       = errors.New("membership: agent closed")
)

// metaVersion prefixes encoded metadata so the format can change without misparsing.
const metaVersion = 1

// Meta is the identity a node gossips. It is deliberately tiny: memberlist caps metadata at
// memberlist.MetaMaxSize (512) bytes and the process panics past it, so load and inventory travel
// over gRPC instead.
type Meta struct {
	Role     string `json:"r"`
	Version  string `json:"v,omitempty"`
	GRPCAddr string `json:"g"`
}

// EncodeMeta serialises m, refusing anything that would not fit.
func EncodeMeta(m Meta) ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("membership: encode meta: %w", err)
	}
	b = append([]byte{metaVersion}, b...)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrMetaTooLarge, len(b))
	}
	return b, nil
}

// DecodeMeta parses metadata received from gossip. It comes from the network: every field is
// checked and anything unexpected is an error.
func DecodeMeta(b []byte) (Meta, error) {
	if len(b) == 0 || len(b) > memberlist.MetaMaxSize {
		return Meta{}, fmt.Errorf("%w: length %d", ErrBadMeta, len(b))
	}
	if b[0] != metaVersion {
		return Meta{}, fmt.Errorf("%w: version %d", ErrBadMeta, b[0])
	}
	var m Meta
	dec := json.NewDecoder(bytes.NewReader(b[1:]))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Meta{}, fmt.Errorf("%w: %w", ErrBadMeta, err)
	}
	if dec.More() {
		return Meta{}, fmt.Errorf("%w: trailing data", ErrBadMeta)
	}
	if m.Role == "" || m.GRPCAddr == "" {
		return Meta{}, fmt.Errorf("%w: missing role or grpc address", ErrBadMeta)
	}
	return m, nil
}
