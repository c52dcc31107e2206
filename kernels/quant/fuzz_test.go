package quant

import (
	"errors"
	"math"
	"testing"
)

// fuzzType maps a fuzzer byte onto one of the supported types, or an
// unsupported one, so every decoder is reached.
func fuzzType(b byte) Type {
	all := append(append([]Type(nil), allTypes...), Q2_K, Type(200))
	return all[int(b)%len(all)]
}

// FuzzDequantize feeds arbitrary bytes (tensor data comes from untrusted
// files) to Dequantize: it must never panic, must fail only with this
// package's sentinels, and may produce non-finite values only when a block
// scale field is itself non-finite.
func FuzzDequantize(f *testing.F) {
	f.Add(byte(3), []byte{0x00, 0x3c, 0x00, 0xbc, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	f.Add(byte(9), make([]byte, 144))
	f.Add(byte(10), make([]byte, 210))
	f.Add(byte(0), []byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, tb byte, src []byte) {
		typ := fuzzType(tb)
		n := 0
		if bb := typ.BlockBytes(); bb > 0 {
			n = len(src) / bb * typ.BlockSize()
		}
		dst := make([]float32, n)
		err := Dequantize(typ, src, dst)
		if err != nil {
			if !errors.Is(err, ErrLength) && !errors.Is(err, ErrUnsupported) {
				t.Fatalf("Dequantize error %v wraps no sentinel", err)
			}
			return
		}
		// Re-encode what decoded to finite values: Quantize must accept
		// any finite input of a valid length.
		for i, v := range dst {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				dst[i] = 0
			}
		}
		if err := Quantize(typ, dst, make([]byte, len(src))); err != nil && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Quantize of decoded values: %v", err)
		}
	})
}

// FuzzVecDot runs the dot products on arbitrary weight and activation
// bytes: no panics, and results agree with the dequantized float dot
// whenever everything is finite.
func FuzzVecDot(f *testing.F) {
	f.Add(byte(3), make([]byte, 20), make([]byte, 36))
	f.Add(byte(8), make([]byte, 144), make([]byte, 292))
	f.Fuzz(func(t *testing.T, tb byte, w, a []byte) {
		typ := fuzzType(tb)
		at, ok := ActivationType(typ)
		if !ok {
			if _, err := VecDot(typ, w, a, 32); !errors.Is(err, ErrUnsupported) {
				t.Fatalf("VecDot(%v): %v, want ErrUnsupported", typ, err)
			}
			return
		}
		blocks := min(len(w)/typ.BlockBytes(), len(a)/at.RowBytes(typ.BlockSize()))
		n := blocks * typ.BlockSize()
		w, a = w[:typ.RowBytes(n)], a[:at.RowBytes(n)]
		if at == Q8_K {
			// Quantize rewrites bsums consistently; arbitrary bsums make
			// the reference comparison meaningless.
			x := make([]float32, n)
			if err := Dequantize(Q8_K, a, x); err != nil {
				t.Fatal(err)
			}
			for i := range x {
				if math.IsNaN(float64(x[i])) || math.IsInf(float64(x[i]), 0) {
					x[i] = 0
				}
			}
			if err := Quantize(Q8_K, x, a); err != nil {
				t.Fatal(err)
			}
		}
		got, err := VecDot(typ, w, a, n)
		if err != nil {
			t.Fatalf("VecDot: %v", err)
		}
		wd, ad := make([]float32, n), make([]float32, n)
		if Dequantize(typ, w, wd) != nil || Dequantize(at, a, ad) != nil {
			t.Fatal("Dequantize failed on sizes VecDot accepted")
		}
		var want, mag float64
		for i := range wd {
			want += float64(wd[i]) * float64(ad[i])
			mag += math.Abs(float64(wd[i]) * float64(ad[i]))
		}
		if math.IsNaN(want) || math.IsInf(mag, 0) || math.IsNaN(float64(got)) || math.IsInf(float64(got), 0) || mag > 1e30 {
			return
		}
		tol := 1e-4*mag + 1e-30
		if at == Q8_1 {
			// The min term uses the stored s, which arbitrary bytes
			// need not make equal to d*Σq.
			return
		}
		if math.Abs(float64(got)-want) > tol {
			t.Fatalf("%v: VecDot %v, dequantized dot %v (tol %g)", typ, got, want, tol)
		}
	})
}
