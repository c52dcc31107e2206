package quant

import (
	"math/rand/v2"
	"testing"
)

// benchN is one row of a 4096-wide matrix, a typical hidden size.
const benchN = 4096

func BenchmarkDequantize(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	x := randRow(r, benchN, 1)
	for _, typ := range weightTypes {
		b.Run(typ.String(), func(b *testing.B) {
			src := make([]byte, typ.RowBytes(benchN))
			if err := Quantize(typ, x, src); err != nil {
				b.Fatal(err)
			}
			dst := make([]float32, benchN)
			b.SetBytes(int64(len(src)))
			for b.Loop() {
				if err := Dequantize(typ, src, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVecDot(b *testing.B) {
	r := rand.New(rand.NewPCG(2, 2))
	w, a := randRow(r, benchN, 0.05), randRow(r, benchN, 1)
	for _, typ := range weightTypes {
		b.Run(typ.String(), func(b *testing.B) {
			at, _ := ActivationType(typ)
			wb, ab := make([]byte, typ.RowBytes(benchN)), make([]byte, at.RowBytes(benchN))
			if err := Quantize(typ, w, wb); err != nil {
				b.Fatal(err)
			}
			if err := QuantizeActivations(typ, a, ab); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(wb)))
			for b.Loop() {
				if _, err := VecDot(typ, wb, ab, benchN); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuantizeActivations(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 3))
	x := randRow(r, benchN, 1)
	for _, at := range []Type{Q8_0, Q8_1, Q8_K} {
		b.Run(at.String(), func(b *testing.B) {
			dst := make([]byte, at.RowBytes(benchN))
			for b.Loop() {
				if err := Quantize(at, x, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuantizeKQuants(b *testing.B) {
	r := rand.New(rand.NewPCG(4, 4))
	x := randRow(r, benchN, 1)
	for _, typ := range []Type{Q4_K, Q5_K, Q6_K} {
		b.Run(typ.String(), func(b *testing.B) {
			dst := make([]byte, typ.RowBytes(benchN))
			for b.Loop() {
				if err := Quantize(typ, x, dst); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
