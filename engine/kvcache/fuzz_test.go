package kvcache

import (
	"errors"
	"testing"
)

// FuzzManagerOps reads the input as a program of allocate, match, grow,
// commit, retain and release operations on a small manager and checks the
// invariants after each one and that releasing everything frees every block.
// Errors are allowed (the program may ask for too much); inconsistency is not.
func FuzzManagerOps(f *testing.F) {
	f.Add([]byte{0, 3, 1, 9, 2, 4, 5, 0, 1, 1, 3, 2})
	f.Add([]byte{1, 20, 1, 20, 4, 0, 4, 1, 1, 20})
	f.Add([]byte{0, 7, 0, 7, 0, 7, 5, 5, 5, 3, 3})
	f.Fuzz(func(t *testing.T, prog []byte) {
		m, err := New(Config{Blocks: 8, BlockSize: 2, ModelID: "fuzz", PrefixCaching: true})
		if err != nil {
			t.Fatal(err)
		}
		var tables []*Table
		var toks [][]int32
		var raw [][]int32
		for i := 0; i+1 < len(prog); i += 2 {
			op, arg := prog[i]%6, int(prog[i+1])
			switch op {
			case 0: // raw allocation
				if b, err := m.Allocate(arg % 5); err == nil {
					raw = append(raw, b)
				} else if !errors.Is(err, ErrOutOfBlocks) {
					t.Fatal(err)
				}
			case 1: // new sequence: prompt of arg%12+1 tokens from one of two prefixes
				n := arg%12 + 1
				tk := make([]int32, n)
				for j := range tk {
					tk[j] = int32(arg%2*100 + j)
				}
				tab := &Table{}
				if _, err := m.MatchPrefix(tab, tk); err != nil {
					t.Fatal(err)
				}
				if err := m.Reserve(tab, n); err != nil {
					if !errors.Is(err, ErrOutOfBlocks) {
						t.Fatal(err)
					}
					if err := m.Release(tab); err != nil {
						t.Fatal(err)
					}
					continue
				}
				m.CommitFull(tab, tk, n)
				tables, toks = append(tables, tab), append(toks, tk)
			case 2: // grow a sequence by arg%3+1 tokens
				if len(tables) == 0 {
					continue
				}
				k := arg % len(tables)
				grown := append(toks[k], make([]int32, arg%3+1)...)
				if err := m.Reserve(tables[k], len(grown)); err == nil {
					toks[k] = grown
					m.CommitFull(tables[k], grown, len(grown))
				} else if !errors.Is(err, ErrOutOfBlocks) {
					t.Fatal(err)
				}
			case 3: // release a sequence
				if len(tables) == 0 {
					continue
				}
				k := arg % len(tables)
				if err := m.Release(tables[k]); err != nil {
					t.Fatal(err)
				}
				tables = append(tables[:k], tables[k+1:]...)
				toks = append(toks[:k], toks[k+1:]...)
			case 4: // pin a sequence's blocks
				if len(tables) == 0 {
					continue
				}
				b := append([]int32(nil), tables[arg%len(tables)].Blocks()...)
				if err := m.Retain(b); err != nil {
					t.Fatal(err)
				}
				raw = append(raw, b)
			case 5: // free a raw allocation or pin, and a block that does not exist
				// Block ids from 8 up do not exist: always refused.
				if err := m.Free([]int32{int32(8 + arg)}); !errors.Is(err, ErrBadBlock) {
					t.Fatalf("free of block %d: %v, want ErrBadBlock", 8+arg, err)
				}
				if len(raw) > 0 {
					k := arg % len(raw)
					if err := m.Free(raw[k]); err != nil {
						t.Fatal(err)
					}
					raw = append(raw[:k], raw[k+1:]...)
				}
			}
			if err := m.CheckInvariants(); err != nil {
				t.Fatalf("after op %d (%d %d): %v", i/2, op, arg, err)
			}
		}
		for _, tab := range tables {
			if err := m.Release(tab); err != nil {
				t.Fatal(err)
			}
		}
		for _, b := range raw {
			if err := m.Free(b); err != nil {
				t.Fatal(err)
			}
		}
		if s := m.Stats(); s.Held != 0 || s.Free != 8 {
			t.Fatalf("leaked: %+v", s)
		}
	})
}
