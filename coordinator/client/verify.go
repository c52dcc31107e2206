package client

import (
	"time"

	"github.com/tandemserve/tandem/coordinator/token"
	pb "github.com/tandemserve/tandem/proto/coordinator/v1"
)

// VerifyTransferToken checks that p's transfer token was signed with the cluster secret for p's
// transfer id, term and decode node, has not expired at now, and is not older than minTerm (the
// highest coordinator term the caller has seen; 0 skips the check). The KV transport calls it on
// the decode side before accepting any block.
func VerifyTransferToken(secret []byte, p *pb.Placement, minTerm uint64, now time.Time) error {
	return token.VerifyTransferToken(secret, p.GetTransferToken(), token.Claims{
		TransferID: p.GetTransferId(),
		Term:       p.GetTerm(),
		DecodeNode: p.GetDecode().GetNodeId(),
		Expiry:     time.Unix(0, p.GetDeadlineUnixNano()),
	}, minTerm, now)
}
