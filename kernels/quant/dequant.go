package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Dequantize decodes len(dst) values of type t from src into dst. len(dst)
// must be a whole number of t's blocks and len(src) must be exactly
// t.RowBytes(len(dst)). It supports every type this package lists, the
// activation formats Q8_1 and Q8_K included.
//
// Dequantize is safe for concurrent use; it only reads src and writes dst.
func Dequantize(t Type, src []byte, dst []float32) error {
	if err := checkSizes(t, len(dst), len(src)); err != nil {
		return err
	}
	switch t {
	case F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	case F16:
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case BF16:
		for i := range dst {
			dst[i] = BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	default:
		dec, ok := decoderFor(t)
		if !ok {
			return fmt.Errorf("%w: dequantize %v", ErrUnsupported, t)
		}
		bs, bb := t.BlockSize(), t.BlockBytes()
		for i := 0; i < len(dst)/bs; i++ {
			dec(src[i*bb:(i+1)*bb], dst[i*bs:(i+1)*bs])
		}
	}
	return nil
}

// checkSizes validates a buffer pair of n values and nbytes encoded bytes.
func checkSizes(t Type, n, nbytes int) error {
	if !t.Valid() {
		return fmt.Errorf("%w: %v", ErrUnsupported, t)
	}
	want := t.RowBytes(n)
	if want < 0 {
		return fmt.Errorf("%w: %d values is not a whole number of %v blocks of %d", ErrLength, n, t, t.BlockSize())
	}
	if nbytes != want {
		return fmt.Errorf("%w: %d %v values need %d bytes, got %d", ErrLength, n, t, want, nbytes)
	}
	return nil
}

// A blockDecoder decodes one block b (exactly BlockBytes long) into y
// (exactly BlockSize long).
type blockDecoder func(b []byte, y []float32)

// decoderFor returns the block decoder of t. A switch rather than a map keeps the
// package free of mutable globals.
func decoderFor(t Type) (blockDecoder, bool) {
	switch t {
	case Q4_0:
		return decodeQ4_0, true
	case Q4_1:
		return decodeQ4_1, true
	case Q5_0:
		return decodeQ5_0, true
	case Q5_1:
		return decodeQ5_1, true
	case Q8_0:
		return decodeQ8_0, true
	case Q8_1:
		return decodeQ8_1, true
	case Q4_K:
		return decodeQ4_K, true
	case Q5_K:
		return decodeQ5_K, true
	case Q6_K:
		return decodeQ6_K, true
	case Q8_K:
		return decodeQ8_K, true
	}
	return nil, false
}

// The explicit float32 conversions around products below stop the compiler
// from fusing multiply-add on architectures with FMA, so the results are
// bit-identical to ggml's and gguf-py's separately rounded arithmetic.
func f16At(b []byte, off int) float32 { return F16ToF32(binary.LittleEndian.Uint16(b[off:])) }

func decodeQ4_0(b []byte, y []float32) {
	d := f16At(b, 0)
	qs := b[2:18]
	for j := 0; j < 16; j++ {
		y[j] = float32(int(qs[j]&0xf)-8) * d
		y[j+16] = float32(int(qs[j]>>4)-8) * d
	}
}

func decodeQ4_1(b []byte, y []float32) {
	d, m := f16At(b, 0), f16At(b, 2)
	qs := b[4:20]
	for j := 0; j < 16; j++ {
		y[j] = float32(float32(qs[j]&0xf)*d) + m
		y[j+16] = float32(float32(qs[j]>>4)*d) + m
	}
}

func decodeQ5_0(b []byte, y []float32) {
	d := f16At(b, 0)
	qh := binary.LittleEndian.Uint32(b[2:])
	qs := b[6:22]
	for j := 0; j < 16; j++ {
		lo := int(qs[j]&0xf) | int(qh>>j&1)<<4
		hi := int(qs[j]>>4) | int(qh>>(j+16)&1)<<4
		y[j] = float32(lo-16) * d
		y[j+16] = float32(hi-16) * d
	}
}

func decodeQ5_1(b []byte, y []float32) {
	d, m := f16At(b, 0), f16At(b, 2)
	qh := binary.LittleEndian.Uint32(b[4:])
	qs := b[8:24]
	for j := 0; j < 16; j++ {
		lo := int(qs[j]&0xf) | int(qh>>j&1)<<4
		hi := int(qs[j]>>4) | int(qh>>(j+16)&1)<<4
		y[j] = float32(float32(lo)*d) + m
		y[j+16] = float32(float32(hi)*d) + m
	}
}

func decodeQ8_0(b []byte, y []float32) {
	d := f16At(b, 0)
	for j, q := range b[2:34] {
		y[j] = float32(int8(q)) * d
	}
}

func decodeQ8_1(b []byte, y []float32) {
	d := f16At(b, 0) // b[2:4] is s = d*sum(q), redundant for decoding
	for j, q := range b[4:36] {
		y[j] = float32(int8(q)) * d
	}
}

// kScaleMin unpacks the 6-bit scale and min of sub-block k from the 12
// packed bytes shared by Q4_K and Q5_K (ggml's get_scale_min_k4).
func kScaleMin(k int, s []byte) (sc, mn uint8) {
	if k < 4 {
		return s[k] & 63, s[k+4] & 63
	}
	return s[k+4]&0xf | (s[k-4]>>6)<<4, s[k+4]>>4 | (s[k]>>6)<<4
}

func decodeQ4_K(b []byte, y []float32) {
	d, dmin := f16At(b, 0), f16At(b, 2)
	scales := b[4:16]
	qs := b[16:144]
	for c := 0; c < 4; c++ {
		sc1, m1 := kScaleMin(2*c, scales)
		sc2, m2 := kScaleMin(2*c+1, scales)
		d1, mm1 := d*float32(sc1), dmin*float32(m1)
		d2, mm2 := d*float32(sc2), dmin*float32(m2)
		q := qs[32*c : 32*c+32]
		for l := 0; l < 32; l++ {
			y[64*c+l] = float32(d1*float32(q[l]&0xf)) - mm1
			y[64*c+32+l] = float32(d2*float32(q[l]>>4)) - mm2
		}
	}
}

func decodeQ5_K(b []byte, y []float32) {
	d, dmin := f16At(b, 0), f16At(b, 2)
	scales := b[4:16]
	qh := b[16:48]
	qs := b[48:176]
	for c := 0; c < 4; c++ {
		sc1, m1 := kScaleMin(2*c, scales)
		sc2, m2 := kScaleMin(2*c+1, scales)
		d1, mm1 := d*float32(sc1), dmin*float32(m1)
		d2, mm2 := d*float32(sc2), dmin*float32(m2)
		u1, u2 := uint8(1)<<(2*c), uint8(2)<<(2*c)
		q := qs[32*c : 32*c+32]
		for l := 0; l < 32; l++ {
			lo, hi := q[l]&0xf, q[l]>>4
			if qh[l]&u1 != 0 {
				lo += 16
			}
			if qh[l]&u2 != 0 {
				hi += 16
			}
			y[64*c+l] = float32(d1*float32(lo)) - mm1
			y[64*c+32+l] = float32(d2*float32(hi)) - mm2
		}
	}
}

func decodeQ6_K(b []byte, y []float32) {
	d := f16At(b, 208)
	for h := 0; h < 2; h++ {
		ql := b[64*h : 64*h+64]
		qh := b[128+32*h : 128+32*h+32]
		sc := b[192+8*h : 192+8*h+8]
		out := y[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			is := l / 16
			q1 := int(ql[l]&0xf|(qh[l]&3)<<4) - 32
			q2 := int(ql[l+32]&0xf|(qh[l]>>2&3)<<4) - 32
			q3 := int(ql[l]>>4|(qh[l]>>4&3)<<4) - 32
			q4 := int(ql[l+32]>>4|(qh[l]>>6&3)<<4) - 32
			out[l] = d * float32(int8(sc[is])) * float32(q1)
			out[l+32] = d * float32(int8(sc[is+2])) * float32(q2)
			out[l+64] = d * float32(int8(sc[is+4])) * float32(q3)
			out[l+96] = d * float32(int8(sc[is+6])) * float32(q4)
		}
	}
}

func decodeQ8_K(b []byte, y []float32) {
	d := math.Float32frombits(binary.LittleEndian.Uint32(b))
	for j, q := range b[4:260] { // bsums at 260..291 are redundant for decoding
		y[j] = float32(int8(q)) * d
	}
}
