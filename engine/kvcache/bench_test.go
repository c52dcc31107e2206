package kvcache

import "testing"

// BenchmarkMatchPrefix1000 measures matching a fully cached 1,000-token
// prompt (62 blocks of 16): the prefix cache's share of a cached TTFT.
func BenchmarkMatchPrefix1000(b *testing.B) {
	m, err := New(Config{Blocks: 256, BlockSize: 16, ModelID: "m", PrefixCaching: true})
	if err != nil {
		b.Fatal(err)
	}
	toks := seq(0, 1000)
	tab := &Table{}
	if err := m.Reserve(tab, len(toks)); err != nil {
		b.Fatal(err)
	}
	m.CommitFull(tab, toks, len(toks))
	if err := m.Release(tab); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		t := &Table{}
		if hit, _ := m.MatchPrefix(t, toks); hit != 992 {
			b.Fatalf("hit %d tokens, want 992", hit)
		}
		if err := m.Release(t); err != nil {
			b.Fatal(err)
		}
	}
}
