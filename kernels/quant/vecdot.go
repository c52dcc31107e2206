package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// ActivationType is the format the activation row must be in for a dot
// product with a weight row of type w, the pairing llama.cpp's CPU backend
// uses (ggml's vec_dot_type): Q8_0 for Q4_0, Q5_0 and Q8_0; Q8_1 for Q4_1 and
// Q5_1; Q8_K for the K-quants; F32 for the float formats. It returns false
// for types that are not weight formats.
func ActivationType(w Type) (Type, bool) {
	switch w {
	case F32, F16, BF16:
		return F32, true
	case Q4_0, Q5_0, Q8_0:
		return Q8_0, true
	case Q4_1, Q5_1:
		return Q8_1, true
	case Q4_K, Q5_K, Q6_K:
		return Q8_K, true
	}
	return 0, false
}

// QuantizeActivations encodes the activation row x into dst in
// ActivationType(w), ready for VecDot against rows of weight type w. dst must
// be exactly ActivationType(w).RowBytes(len(x)) bytes.
func QuantizeActivations(w Type, x []float32, dst []byte) error {
	at, ok := ActivationType(w)
	if !ok {
		return fmt.Errorf("%w: %v is not a weight format", ErrUnsupported, w)
	}
	return Quantize(at, x, dst)
}

// VecDot returns the dot product of n values: the weight row w (type t) and
// the activation row act (type ActivationType(t), as written by
// QuantizeActivations). It is the reference the SIMD and CUDA kernels must
// reproduce: for the quantized formats each block's products are summed
// exactly in integers and scaled once by d_w*d_a (Q4_1/Q5_1 add m_w*s_a;
// the K-quants subtract dmin_w*d_a*Σ min_k*bsum_k), and the per-block
// results are accumulated in float32 in block order, as in ggml's
// ggml_vec_dot_* functions. Float formats accumulate w[i]*act[i] in float32
// in index order.
//
// VecDot is safe for concurrent use.
func VecDot(t Type, w, act []byte, n int) (float32, error) {
	at, ok := ActivationType(t)
	if !ok {
		return 0, fmt.Errorf("%w: dot product with %v weights", ErrUnsupported, t)
	}
	if err := checkSizes(t, n, len(w)); err != nil {
		return 0, fmt.Errorf("quant: weight row: %w", err)
	}
	if err := checkSizes(at, n, len(act)); err != nil {
		return 0, fmt.Errorf("quant: activation row: %w", err)
	}
	switch t {
	case F32:
		return dotF32(w, act, n), nil
	case F16:
		return dotF16(w, act, n), nil
	case BF16:
		return dotBF16(w, act, n), nil
	}
	dot, ok := blockDotFor(t)
	if !ok {
		return 0, fmt.Errorf("%w: dot product with %v weights", ErrUnsupported, t)
	}
	wb, ab := t.BlockBytes(), at.BlockBytes()
	var sum float32
	for i := 0; i < n/t.BlockSize(); i++ {
		sum += dot(w[i*wb:(i+1)*wb], act[i*ab:(i+1)*ab])
	}
	return sum, nil
}

func f32At(b []byte, i int) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
}

func dotF32(w, act []byte, n int) float32 {
	var s float32
	for i := 0; i < n; i++ {
		s += float32(f32At(w, i) * f32At(act, i))
	}
	return s
}

func dotF16(w, act []byte, n int) float32 {
	var s float32
	for i := 0; i < n; i++ {
		s += float32(F16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * f32At(act, i))
	}
	return s
}

func dotBF16(w, act []byte, n int) float32 {
	var s float32
	for i := 0; i < n; i++ {
		s += float32(BF16ToF32(binary.LittleEndian.Uint16(w[2*i:])) * f32At(act, i))
	}
	return s
}

// A blockDot returns one weight block's contribution to a dot product.
type blockDot func(w, a []byte) float32

// blockDotFor returns the per-block dot product of weight type t. A switch rather than a map keeps the
// package free of mutable globals.
func blockDotFor(t Type) (blockDot, bool) {
	switch t {
	case Q4_0:
		return dotQ4_0, true
	case Q4_1:
		return dotQ4_1, true
	case Q5_0:
		return dotQ5_0, true
	case Q5_1:
		return dotQ5_1, true
	case Q8_0:
		return dotQ8_0, true
	case Q4_K:
		return dotQ4_K, true
	case Q5_K:
		return dotQ5_K, true
	case Q6_K:
		return dotQ6_K, true
	}
	return nil, false
}

func i8(b byte) int32 { return int32(int8(b)) }

func dotQ4_0(w, a []byte) float32 {
	qs, r := w[2:18], a[2:34]
	var s int32
	for j := 0; j < 16; j++ {
		s += (int32(qs[j]&0xf)-8)*i8(r[j]) + (int32(qs[j]>>4)-8)*i8(r[j+16])
	}
	return float32(s) * float32(f16At(w, 0)*f16At(a, 0))
}

func dotQ4_1(w, a []byte) float32 {
	qs, r := w[4:20], a[4:36]
	var s int32
	for j := 0; j < 16; j++ {
		s += int32(qs[j]&0xf)*i8(r[j]) + int32(qs[j]>>4)*i8(r[j+16])
	}
	return float32(float32(f16At(w, 0)*f16At(a, 0))*float32(s)) + float32(f16At(w, 2)*f16At(a, 2))
}

func dotQ5_0(w, a []byte) float32 {
	qh := binary.LittleEndian.Uint32(w[2:])
	qs, r := w[6:22], a[2:34]
	var s int32
	for j := 0; j < 16; j++ {
		lo := int32(qs[j]&0xf) | int32(qh>>j&1)<<4
		hi := int32(qs[j]>>4) | int32(qh>>(j+16)&1)<<4
		s += (lo-16)*i8(r[j]) + (hi-16)*i8(r[j+16])
	}
	return float32(s) * float32(f16At(w, 0)*f16At(a, 0))
}

func dotQ5_1(w, a []byte) float32 {
	qh := binary.LittleEndian.Uint32(w[4:])
	qs, r := w[8:24], a[4:36]
	var s int32
	for j := 0; j < 16; j++ {
		lo := int32(qs[j]&0xf) | int32(qh>>j&1)<<4
		hi := int32(qs[j]>>4) | int32(qh>>(j+16)&1)<<4
		s += lo*i8(r[j]) + hi*i8(r[j+16])
	}
	return float32(float32(f16At(w, 0)*f16At(a, 0))*float32(s)) + float32(f16At(w, 2)*f16At(a, 2))
}

func dotQ8_0(w, a []byte) float32 {
	qs, r := w[2:34], a[2:34]
	var s int32
	for j := range 32 {
		s += i8(qs[j]) * i8(r[j])
	}
	return float32(s) * float32(f16At(w, 0)*f16At(a, 0))
}

// q8K splits a Q8_K block into its scale, codes and 16-value sums.
func q8K(a []byte) (d float32, qs []byte, bsum func(k int) int32) {
	return math.Float32frombits(binary.LittleEndian.Uint32(a)), a[4:260], func(k int) int32 {
		return int32(int16(binary.LittleEndian.Uint16(a[260+2*k:])))
	}
}

// dotKMin is the common tail of Q4_K and Q5_K: sumi is Σ_k sc_k*dot_k over
// the eight 32-value groups; the min term uses the activation bsums, so it
// costs 16 multiplies instead of 256.
func dotKMin(w []byte, da float32, sumi int32, bsum func(int) int32) float32 {
	var sumMins int32
	for k := 0; k < 8; k++ {
		_, m := kScaleMin(k, w[4:16])
		sumMins += int32(m) * (bsum(2*k) + bsum(2*k+1))
	}
	d := float32(f16At(w, 0) * da)
	dmin := float32(f16At(w, 2) * da)
	return float32(d*float32(sumi)) - float32(dmin*float32(sumMins))
}

func dotQ4_K(w, a []byte) float32 {
	da, r, bsum := q8K(a)
	qs := w[16:144]
	var sumi int32
	for c := 0; c < 4; c++ {
		sc1, _ := kScaleMin(2*c, w[4:16])
		sc2, _ := kScaleMin(2*c+1, w[4:16])
		var s1, s2 int32
		for l := 0; l < 32; l++ {
			q := qs[32*c+l]
			s1 += int32(q&0xf) * i8(r[64*c+l])
			s2 += int32(q>>4) * i8(r[64*c+32+l])
		}
		sumi += int32(sc1)*s1 + int32(sc2)*s2
	}
	return dotKMin(w, da, sumi, bsum)
}

func dotQ5_K(w, a []byte) float32 {
	da, r, bsum := q8K(a)
	qh, qs := w[16:48], w[48:176]
	var sumi int32
	for c := 0; c < 4; c++ {
		sc1, _ := kScaleMin(2*c, w[4:16])
		sc2, _ := kScaleMin(2*c+1, w[4:16])
		u1, u2 := uint8(1)<<(2*c), uint8(2)<<(2*c)
		var s1, s2 int32
		for l := 0; l < 32; l++ {
			lo, hi := int32(qs[32*c+l]&0xf), int32(qs[32*c+l]>>4)
			if qh[l]&u1 != 0 {
				lo += 16
			}
			if qh[l]&u2 != 0 {
				hi += 16
			}
			s1 += lo * i8(r[64*c+l])
			s2 += hi * i8(r[64*c+32+l])
		}
		sumi += int32(sc1)*s1 + int32(sc2)*s2
	}
	return dotKMin(w, da, sumi, bsum)
}

func dotQ6_K(w, a []byte) float32 {
	da, r, _ := q8K(a)
	var sumi int32
	for h := 0; h < 2; h++ {
		ql, qh := w[64*h:64*h+64], w[128+32*h:128+32*h+32]
		sc := w[192+8*h : 192+8*h+8]
		ra := r[128*h : 128*h+128]
		var s [8]int32 // one per 16-value group, in scale order
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int32(ql[l]&0xf|(qh[l]&3)<<4) - 32
			q2 := int32(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
			q3 := int32(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int32(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			s[is] += q1 * i8(ra[l])
			s[is+2] += q2 * i8(ra[l+32])
			s[is+4] += q3 * i8(ra[l+64])
			s[is+6] += q4 * i8(ra[l+96])
		}
		for k := 0; k < 8; k++ {
			sumi += i8(sc[k]) * s[k]
		}
	}
	return float32(f16At(w, 208)*da) * float32(sumi)
}
