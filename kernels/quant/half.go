package quant

import "math"

// F16ToF32 widens an IEEE 754 binary16 value. Every half float is exactly
// representable as a float32, so the conversion is exact, including
// subnormals, signed zeros, infinities and NaN payloads. It is small enough
// to inline into the dequantization loops.
func F16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	em := uint32(h&0x7fff) << 13 // exponent and mantissa in float32 position
	switch {
	case em >= 0x7c00<<13: // inf or NaN: exponent 31 -> 255, payload kept
		em += (255 - 31) << 23
	case em >= 0x0400<<13: // normal: rebias 15 -> 127
		em += (127 - 15) << 23
	default: // zero or subnormal: value = mantissa * 2^-24, exact in float32
		em = math.Float32bits(float32(h&0x3ff) * (1.0 / (1 << 24)))
	}
	return math.Float32frombits(sign | em)
}

// F32ToF16 narrows a float32 to binary16 with round-to-nearest-even, the
// rounding of ggml's GGML_FP32_TO_FP16 and numpy's astype(float16). Values
// too large become ±Inf, values too small become (signed) subnormals or zero,
// and NaN stays a quiet NaN.
func F32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	if exp == 0xff {
		if mant != 0 {
			// Keep the top payload bits and force the quiet bit so a
			// payload living only in the low bits cannot turn into Inf.
			return sign | 0x7e00 | uint16(mant>>13)
		}
		return sign | 0x7c00
	}
	e := exp - 127 + 15
	if e >= 0x1f {
		return sign | 0x7c00
	}
	if e <= 0 {
		// Subnormal half (or zero): shift the full 24-bit significand so
		// that one unit equals 2^-24, rounding to nearest even.
		if e < -10 {
			return sign // below half of the smallest subnormal: rounds to zero
		}
		m := mant | 0x800000
		shift := uint32(14 - e) // 13 for normal alignment + (1-e)
		half := uint32(1) << (shift - 1)
		rest := m & (1<<shift - 1)
		q := m >> shift
		if rest > half || (rest == half && q&1 == 1) {
			q++ // may carry into the exponent field: 0x400 is the smallest normal, which is right
		}
		return sign | uint16(q)
	}
	q := uint32(e)<<10 | mant>>13
	rest := mant & 0x1fff
	if rest > 0x1000 || (rest == 0x1000 && q&1 == 1) {
		q++ // a carry into the exponent is correct, up to and including Inf
	}
	return sign | uint16(q)
}

// BF16ToF32 widens a bfloat16 value: it is the top half of a float32.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 narrows a float32 to bfloat16 with round-to-nearest-even, the
// rounding of ggml's ggml_compute_fp32_to_bf16: NaN stays a quiet NaN.
func F32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x40
	}
	return uint16((b + 0x7fff + (b>>16)&1) >> 16)
}

func sqrt32(v float32) float32 { return float32(math.Sqrt(float64(v))) }
