package cpu

import (
	"testing"

	"github.com/tandemserve/tandem/kernels/quant"
)

// FuzzWeight feeds arbitrary weight bytes and shapes (as a hostile GGUF file
// could declare them) through NewWeight and, when accepted, through MatMul and
// Embed: the C kernels must neither crash nor read out of bounds, whatever
// the scales decode to (NaN and Inf included).
func FuzzWeight(f *testing.F) {
	f.Add(uint8(quant.Q4_1), uint16(3), uint16(64), []byte{0x3c, 0x00})
	f.Add(uint8(quant.Q6_K), uint16(1), uint16(256), []byte{0xff, 0x7c})
	f.Add(uint8(quant.F16), uint16(2), uint16(5), []byte{0x00, 0x7e, 0x01})
	f.Add(uint8(quant.Q8_0), uint16(0), uint16(32), []byte{})
	f.Add(uint8(quant.Q5_K), uint16(2), uint16(100), []byte{1, 2, 3})
	f.Add(uint8(99), uint16(1), uint16(32), []byte{})
	b := newBackend(f, Config{Threads: 2, MaxLevel: LevelAVX512})
	f.Fuzz(func(t *testing.T, typ uint8, rows, cols uint16, pattern []byte) {
		tt := quant.Type(typ)
		r, c := int(rows%40), int(cols%600)
		n := 0
		if rb := tt.RowBytes(c); rb > 0 {
			n = rb * r
		}
		if len(pattern) > 0 && len(pattern)%7 == 3 {
			n++ // sometimes the wrong size
		}
		data := make([]byte, n)
		for i := range data {
			if len(pattern) > 0 {
				data[i] = pattern[i%len(pattern)] ^ byte(i)
			}
		}
		w, err := b.NewWeight(tt, r, c, data)
		if err != nil {
			return
		}
		x := b.NewTensor(2, c)
		xs := make([]float32, 2*c)
		for i := range xs {
			xs[i] = float32(i%7) - 3
		}
		b.Write(x, xs)
		dst := b.NewTensor(2, r)
		b.MatMul(dst, x, w)
		emb := b.NewTensor(1, c)
		b.Embed(emb, w, []int32{int32(r - 1)})
		// Values may be anything (NaN scales are legal bytes); the check is
		// that the kernels return and the row has the declared width.
		if out := readAll(b, emb); len(out) != c {
			t.Fatalf("Embed wrote %d values, want %d", len(out), c)
		}
	})
}
