// Package wire converts between the transport's Go types and their protobuf
// messages (tandem.transport.v1), validating everything that arrives from a
// peer: a message decoded from the network is untrusted until it passes here.
package wire

import (
	"fmt"
	"math"
	"time"

	"github.com/tandemserve/tandem/kernels"
	transportv1 "github.com/tandemserve/tandem/proto/transport/v1"
	"github.com/tandemserve/tandem/transport"
)

// maxTokenBytes bounds a token from the network (an HMAC-SHA256 is 32).
const maxTokenBytes = 64

// Descriptor encodes d.
func Descriptor(d transport.Descriptor) *transportv1.Descriptor {
	return &transportv1.Descriptor{
		NodeId:  d.NodeID,
		ModelId: d.ModelID,
		Spec: &transportv1.KVSpec{
			Layers: uint32(d.Spec.Layers), Blocks: uint32(d.Spec.Blocks), BlockSize: uint32(d.Spec.BlockSize),
			KvHeads: uint32(d.Spec.KVHeads), HeadDim: uint32(d.Spec.HeadDim), Dtype: d.Spec.DType.String(),
		},
		Layout:     d.Layout,
		BlockBytes: uint32(d.Spec.BlockBytes()),
		HostId:     d.HostID,
	}
}

// FromDescriptor decodes and validates a peer's descriptor.
func FromDescriptor(m *transportv1.Descriptor) (transport.Descriptor, error) {
	if m == nil || m.GetSpec() == nil {
		return transport.Descriptor{}, fmt.Errorf("%w: descriptor missing", transport.ErrProtocol)
	}
	s := m.GetSpec()
	dt, err := kernels.ParseKVDType(s.GetDtype())
	if err != nil {
		return transport.Descriptor{}, fmt.Errorf("%w: %w", transport.ErrIncompatible, err)
	}
	d := transport.Descriptor{
		NodeID: m.GetNodeId(), ModelID: m.GetModelId(), Layout: m.GetLayout(), HostID: m.GetHostId(),
		Spec: kernels.KVSpec{
			Layers: int(s.GetLayers()), Blocks: int(s.GetBlocks()), BlockSize: int(s.GetBlockSize()),
			KVHeads: int(s.GetKvHeads()), HeadDim: int(s.GetHeadDim()), DType: dt,
		},
	}
	if err := d.Validate(); err != nil {
		return transport.Descriptor{}, err
	}
	if int(m.GetBlockBytes()) != d.Spec.BlockBytes() {
		return transport.Descriptor{}, fmt.Errorf("%w: peer block bytes %d, spec implies %d", transport.ErrIncompatible, m.GetBlockBytes(), d.Spec.BlockBytes())
	}
	return d, nil
}

// Grant encodes g.
func Grant(g transport.Grant) *transportv1.Grant {
	return &transportv1.Grant{TransferId: g.TransferID, Epoch: g.Epoch, ExpiryUnixNano: g.Expiry.UnixNano(), Token: g.Token}
}

// FromGrant decodes a grant; the receiver verifies its token.
func FromGrant(m *transportv1.Grant) (transport.Grant, error) {
	if m == nil {
		return transport.Grant{}, fmt.Errorf("%w: grant missing", transport.ErrUnauthenticated)
	}
	if len(m.GetToken()) > maxTokenBytes {
		return transport.Grant{}, fmt.Errorf("%w: token of %d bytes", transport.ErrUnauthenticated, len(m.GetToken()))
	}
	return transport.Grant{
		TransferID: m.GetTransferId(), Epoch: m.GetEpoch(),
		Expiry: time.Unix(0, m.GetExpiryUnixNano()), Token: m.GetToken(),
	}, nil
}

// Blocks checks a block count from the network.
func Blocks(n uint32) (int, error) {
	if n == 0 || n > math.MaxInt32 {
		return 0, fmt.Errorf("%w: %d blocks", transport.ErrInvalid, n)
	}
	return int(n), nil
}

// Layer checks a layer index from the network.
func Layer(l uint32) (int, error) {
	if l > math.MaxInt32 {
		return 0, fmt.Errorf("%w: layer %d", transport.ErrProtocol, l)
	}
	return int(l), nil
}

// Lease decodes a reserve response.
func Lease(g transport.Grant, m *transportv1.ReserveResponse) transport.Lease {
	return transport.Lease{
		TransferID: g.TransferID, Token: g.Token, Epoch: g.Epoch,
		Expiry: time.Unix(0, m.GetLeaseExpiryUnixNano()), Blocks: m.GetBlocks(),
		FenceKey: m.GetFenceKey(),
	}
}

// Failure encodes err for a peer.
func Failure(err error) *transportv1.Failure {
	reason := transport.Reason(err)
	if reason == "" {
		reason = transport.Reason(transport.ErrProtocol)
	}
	return &transportv1.Failure{Reason: reason, Message: err.Error()}
}

// FromFailure rebuilds a peer's error.
func FromFailure(m *transportv1.Failure) error {
	return transport.ErrorFromReason(m.GetReason(), m.GetMessage())
}
