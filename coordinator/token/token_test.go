package token

import (
	"errors"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	now := time.Unix(1000, 0)
	base := Claims{TransferID: "t1", Term: 5, DecodeNode: "d1", Expiry: now.Add(time.Minute)}
	tok, err := Sign(secret, base)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		secret  []byte
		tok     string
		claims  Claims
		minTerm uint64
		now     time.Time
		want    error
	}{
		{"valid", secret, tok, base, 5, now, nil},
		{"other decode node", secret, tok, Claims{TransferID: "t1", Term: 5, DecodeNode: "d2", Expiry: base.Expiry}, 0, now, ErrInvalid},
		{"other term", secret, tok, Claims{TransferID: "t1", Term: 6, DecodeNode: "d1", Expiry: base.Expiry}, 0, now, ErrInvalid},
		{"length prefix prevents shifting", secret, tok, Claims{TransferID: "t1d", Term: 5, DecodeNode: "1", Expiry: base.Expiry}, 0, now, ErrInvalid},
		{"wrong secret", []byte("fedcba9876543210fedcba9876543210"), tok, base, 0, now, ErrInvalid},
		{"expired", secret, tok, base, 0, now.Add(time.Hour), ErrExpired},
		{"stale term", secret, tok, base, 6, now, ErrStaleTerm},
		{"garbage", secret, "!!", base, 0, now, ErrInvalid},
		{"weak secret", []byte("short"), tok, base, 0, now, ErrWeakSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := VerifyTransferToken(tt.secret, tt.tok, tt.claims, tt.minTerm, tt.now); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func FuzzVerify(f *testing.F) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	f.Add("AAAA", "t", uint64(1), "d")
	f.Fuzz(func(t *testing.T, tok, id string, term uint64, node string) {
		c := Claims{TransferID: id, Term: term, DecodeNode: node, Expiry: time.Unix(2000, 0)}
		if err := VerifyTransferToken(secret, tok, c, 0, time.Unix(1000, 0)); err == nil {
			good, _ := Sign(secret, c)
			if good != tok {
				t.Fatalf("forged token accepted")
			}
		}
	})
}
