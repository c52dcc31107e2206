package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Quantize encodes src into dst in format t. len(src) must be a whole number
// of t's blocks and len(dst) exactly t.RowBytes(len(src)).
//
// The legacy formats (Q4_0 ... Q8_1) and Q8_K follow ggml's reference
// quantizers (quantize_row_*_ref) operation for operation, so their output is
// byte-identical to ggml's and gguf-py's for finite input. The weight
// K-quants (Q4_K, Q5_K, Q6_K) follow the same reference algorithms
// (make_qkx2_quants, make_qx_quants) without importance weights. Non-finite
// input values produce in-range codes of unspecified value.
//
// Quantize is safe for concurrent use; it only reads src and writes dst.
func Quantize(t Type, src []float32, dst []byte) error {
	if err := checkSizes(t, len(src), len(dst)); err != nil {
		return err
	}
	switch t {
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToF16(v))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], F32ToBF16(v))
		}
	default:
		enc, ok := encoderFor(t)
		if !ok {
			return fmt.Errorf("%w: quantize to %v", ErrUnsupported, t)
		}
		bs, bb := t.BlockSize(), t.BlockBytes()
		for i := 0; i < len(src)/bs; i++ {
			enc(src[i*bs:(i+1)*bs], dst[i*bb:(i+1)*bb])
		}
	}
	return nil
}

// A blockEncoder encodes one block of BlockSize values x into b (exactly
// BlockBytes long), overwriting every byte of b.
type blockEncoder func(x []float32, b []byte)

// encoderFor returns the block encoder of t. A switch rather than a map keeps the
// package free of mutable globals.
func encoderFor(t Type) (blockEncoder, bool) {
	switch t {
	case Q4_0:
		return encodeQ4_0, true
	case Q4_1:
		return encodeQ4_1, true
	case Q5_0:
		return encodeQ5_0, true
	case Q5_1:
		return encodeQ5_1, true
	case Q8_0:
		return encodeQ8_0, true
	case Q8_1:
		return encodeQ8_1, true
	case Q4_K:
		return encodeQ4_K, true
	case Q5_K:
		return encodeQ5_K, true
	case Q6_K:
		return encodeQ6_K, true
	case Q8_K:
		return encodeQ8_K, true
	}
	return nil, false
}

func putF16(b []byte, off int, v float32) { binary.LittleEndian.PutUint16(b[off:], F32ToF16(v)) }

// truncCode converts v to an integer code the way ggml's (int8_t)(v) cast
// does for in-range values (truncation toward zero), then clamps to
// [0, hi] so that extreme or non-finite input cannot wrap.
func truncCode(v float32, hi int) uint8 {
	if !(v > 0) { // also catches NaN
		return 0
	}
	if v >= float32(hi) {
		return uint8(hi)
	}
	return uint8(int(v))
}

// signedMax returns the value of largest magnitude (the first one on ties),
// which the symmetric legacy formats map to code 0.
func signedMax(x []float32) float32 {
	var amax, max float32
	for _, v := range x {
		if a := abs32(v); amax < a {
			amax, max = a, v
		}
	}
	return max
}

func minMax(x []float32) (lo, hi float32) {
	lo, hi = float32(math.MaxFloat32), -float32(math.MaxFloat32)
	for _, v := range x {
		if v < lo {
			lo = v
		}
		if v > hi {
			hi = v
		}
	}
	return lo, hi
}

func abs32(v float32) float32 { return math.Float32frombits(math.Float32bits(v) &^ (1 << 31)) }

func inv(d float32) float32 {
	if d == 0 {
		return 0
	}
	return 1 / d
}

// roundAway is C's roundf (halves round away from zero) for the |v| <= 2^31
// it is used with; larger magnitudes and NaN return v unchanged, which the
// callers clamp. Adding 0.5 in float64 is exact for any float32, so
// truncating the sum rounds correctly without math.Round's slower path.
func roundAway(v float32) float32 {
	x := float64(v)
	switch {
	case x >= 0 && x < 1<<31:
		return float32(int64(x + 0.5))
	case x < 0 && x > -(1<<31):
		return float32(-int64(-x + 0.5))
	}
	return v
}

// nearestInt is ggml's nearest_int: round half to even (the float magic
// number trick, here in float64 where it is exact for every float32 below
// 2^51 in magnitude). Out-of-range input (never produced by the callers'
// finite arithmetic) saturates.
func nearestInt(v float32) int {
	const magic = 0x1.8p52
	x := float64(v)
	switch {
	case x != x:
		return 0
	case x > 1<<51:
		return 1 << 51
	case x < -(1 << 51):
		return -(1 << 51)
	}
	return int(x + magic - magic)
}

func encodeQ4_0(x []float32, b []byte) {
	d := signedMax(x) / -8
	id := inv(d)
	putF16(b, 0, d)
	for j := 0; j < 16; j++ {
		lo := truncCode(float32(x[j]*id)+8.5, 15)
		hi := truncCode(float32(x[j+16]*id)+8.5, 15)
		b[2+j] = lo | hi<<4
	}
}

func encodeQ4_1(x []float32, b []byte) {
	lo, hi := minMax(x)
	d := (hi - lo) / 15
	id := inv(d)
	putF16(b, 0, d)
	putF16(b, 2, lo)
	for j := 0; j < 16; j++ {
		q0 := truncCode(float32((x[j]-lo)*id)+0.5, 15)
		q1 := truncCode(float32((x[j+16]-lo)*id)+0.5, 15)
		b[4+j] = q0 | q1<<4
	}
}

func encodeQ5_0(x []float32, b []byte) {
	d := signedMax(x) / -16
	id := inv(d)
	putF16(b, 0, d)
	var qh uint32
	for j := 0; j < 16; j++ {
		q0 := truncCode(float32(x[j]*id)+16.5, 31)
		q1 := truncCode(float32(x[j+16]*id)+16.5, 31)
		b[6+j] = q0&0xf | (q1&0xf)<<4
		qh |= uint32(q0>>4)<<j | uint32(q1>>4)<<(j+16)
	}
	binary.LittleEndian.PutUint32(b[2:], qh)
}

func encodeQ5_1(x []float32, b []byte) {
	lo, hi := minMax(x)
	d := (hi - lo) / 31
	id := inv(d)
	putF16(b, 0, d)
	putF16(b, 2, lo)
	var qh uint32
	for j := 0; j < 16; j++ {
		q0 := truncCode(float32((x[j]-lo)*id)+0.5, 31)
		q1 := truncCode(float32((x[j+16]-lo)*id)+0.5, 31)
		b[8+j] = q0&0xf | (q1&0xf)<<4
		qh |= uint32(q0>>4)<<j | uint32(q1>>4)<<(j+16)
	}
	binary.LittleEndian.PutUint32(b[4:], qh)
}

// int8Codes writes roundf(x*id) clamped to int8 into qs and returns their
// sum. The product is rounded to float32 first, as in ggml; the rounding
// itself happens in float64, where adding 0.5 is exact.
func int8Codes(x []float32, id float32, qs []byte) int {
	sum := 0
	for j, v := range x {
		p := float64(v * id)
		var q int
		switch {
		case p != p: // NaN input
		case p >= 127:
			q = 127
		case p <= -128:
			q = -128
		case p >= 0:
			q = int(p + 0.5)
		default:
			q = -int(-p + 0.5)
		}
		qs[j] = byte(int8(q))
		sum += q
	}
	return sum
}

func absMax(x []float32) float32 {
	var amax float32
	for _, v := range x {
		// A plain compare, not the builtin max: its NaN and signed-zero
		// handling costs more than the rest of the quantizer, and ggml's
		// MAX macro ignores NaN the same way.
		if a := abs32(v); a > amax {
			amax = a
		}
	}
	return amax
}

func encodeQ8_0(x []float32, b []byte) {
	d := absMax(x) / 127
	putF16(b, 0, d)
	int8Codes(x, inv(d), b[2:34])
}

// encodeQ8_1 is quantize_row_q8_1_ref: s = d*sum(q) with the unrounded d,
// so Q4_1/Q5_1 dot products can fold the weight block's min in with one
// multiply.
func encodeQ8_1(x []float32, b []byte) {
	d := absMax(x) / 127
	putF16(b, 0, d)
	sum := int8Codes(x, inv(d), b[4:36])
	putF16(b, 2, float32(sum)*d)
}

// encodeQ8_K is quantize_row_q8_K_ref: the scale maps the signed maximum to
// -127 (so the opposite extreme may reach 128 and is clamped to 127), rounding
// is half-to-even, and bsums holds the sum of each run of 16 codes for the
// K-quant min terms.
func encodeQ8_K(x []float32, b []byte) {
	clear(b)
	m := signedMax(x)
	if m == 0 {
		return
	}
	iscale := -127 / m
	qs := b[4:260]
	for j, v := range x {
		q := max(-128, min(127, nearestInt(iscale*v)))
		qs[j] = byte(int8(q))
	}
	for j := 0; j < 16; j++ {
		s := 0
		for _, q := range qs[16*j : 16*j+16] {
			s += int(int8(q))
		}
		binary.LittleEndian.PutUint16(b[260+2*j:], uint16(int16(s)))
	}
	binary.LittleEndian.PutUint32(b, math.Float32bits(1/iscale))
}
