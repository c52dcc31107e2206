package gateway

import (
	"bytes"
	"testing"
	"time"

	"github.com/tandemserve/tandem/coordinator/token"
	"github.com/tandemserve/tandem/transport"
)

// The coordinator signs placements and the decode worker's transport
// verifies them: the two encodings must stay byte-identical, or every
// coordinator-placed transfer would be refused.
func TestCoordinatorTokenIsTransportGrant(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	expiry := time.Unix(1_900_000_000, 123)
	tests := []token.Claims{
		{TransferID: "t-1", Term: 7, DecodeNode: "127.0.0.1:9101", Expiry: expiry},
		{TransferID: "a", Term: 0, DecodeNode: "b", Expiry: expiry},
		{TransferID: "x/y/z", Term: 1 << 40, DecodeNode: "[::1]:1", Expiry: expiry.Add(time.Hour)},
	}
	for _, c := range tests {
		tok, err := token.Sign(secret, c)
		if err != nil {
			t.Fatal(err)
		}
		mac, err := token.MAC(tok)
		if err != nil {
			t.Fatal(err)
		}
		g, err := transport.IssueGrant(secret, c.TransferID, c.Term, c.DecodeNode, c.Expiry)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(mac, g.Token) {
			t.Fatalf("%+v: coordinator token %x, transport grant %x", c, mac, g.Token)
		}
	}
}
