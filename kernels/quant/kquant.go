package quant

// groupMaxEps is ggml's GROUP_MAX_EPS: groups whose largest magnitude is
// below it quantize to all zeros.
const groupMaxEps = 1e-15

// makeQKX2 is ggml's make_qkx2_quants for an asymmetric group x: it picks a
// scale and a non-positive offset min so that x ≈ scale*L + min with codes L in
// [0, nmax], trying nstep+1 candidate scales around nmax/(max-min) and
// keeping the one with the least weighted squared error. It returns the
// scale and -min (the value the K-quant formats store).
func makeQKX2(x, w []float32, nmax int, L, laux []uint8, rmin, rdelta float32, nstep int) (scale, negMin float32) {
	lo, hi := x[0], x[0]
	sumW, sumX := w[0], w[0]*x[0]
	for i := 1; i < len(x); i++ {
		lo, hi = min(lo, x[i]), max(hi, x[i])
		sumW += w[i]
		sumX += float32(w[i] * x[i])
	}
	lo = min(lo, 0)
	if hi == lo {
		clear(L)
		return 0, -lo
	}
	fnmax := float32(nmax)
	iscale := fnmax / (hi - lo)
	scale = 1 / iscale
	var bestErr float32
	for i, v := range x {
		l := clampInt(nearestInt(iscale*(v-lo)), 0, nmax)
		L[i] = uint8(l)
		diff := float32(scale*float32(l)) + lo - v
		bestErr += w[i] * diff * diff
	}
	for is := 0; is <= nstep; is++ {
		iscale = (rmin + rdelta*float32(is) + fnmax) / (hi - lo)
		var sumL, sumL2, sumXL float32
		for i, v := range x {
			l := clampInt(nearestInt(iscale*(v-lo)), 0, nmax)
			laux[i] = uint8(l)
			fl := float32(l)
			sumL += w[i] * fl
			sumL2 += w[i] * fl * fl
			sumXL += w[i] * fl * v
		}
		det := sumW*sumL2 - sumL*sumL
		if det <= 0 {
			continue
		}
		thisScale := (sumW*sumXL - sumX*sumL) / det
		thisMin := (sumL2*sumX - sumL*sumXL) / det
		if thisMin > 0 {
			thisMin = 0
			thisScale = sumXL / sumL2
		}
		var curErr float32
		for i, v := range x {
			diff := float32(thisScale*float32(laux[i])) + thisMin - v
			curErr += w[i] * diff * diff
		}
		if curErr < bestErr {
			copy(L, laux)
			bestErr, scale, lo = curErr, thisScale, thisMin
		}
	}
	return scale, -lo
}

// makeQX is ggml's make_qx_quants with rmse_type 1 for a symmetric group:
// codes L in [0, 2*nmax) represent L-nmax, and the scale is refined over 18
// candidates by weighted (x²) least squares. It returns the scale.
func makeQX(x []float32, nmax int, L []uint8) float32 {
	var m, amax float32
	for _, v := range x {
		if a := abs32(v); a > amax {
			amax, m = a, v
		}
	}
	if amax < groupMaxEps {
		clear(L)
		return 0
	}
	fnmax := float32(nmax)
	codes := func(iscale float32) (sumLX, sumL2 float32) {
		for _, v := range x {
			l := float32(clampInt(nearestInt(iscale*v), -nmax, nmax-1))
			w := v * v
			sumLX += w * v * l
			sumL2 += w * l * l
		}
		return sumLX, sumL2
	}
	fill := func(iscale float32) {
		for i, v := range x {
			L[i] = uint8(nmax + clampInt(nearestInt(iscale*v), -nmax, nmax-1))
		}
	}
	iscale := -fnmax / m
	sumLX, sumL2 := codes(iscale)
	fill(iscale)
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := scale * sumLX
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(fnmax + 0.1*float32(is)) / m
		sumLX, sumL2 = codes(iscale)
		if sumL2 > 0 && sumLX*sumLX > best*sumL2 {
			fill(iscale)
			scale = sumLX / sumL2
			best = scale * sumLX
		}
	}
	return scale
}

func clampInt(v, lo, hi int) int { return max(lo, min(hi, v)) }

// kSubScales quantizes one 256-value superblock in 8 groups of 32 with
// makeQKX2 and packs the 6-bit group scales and mins the way Q4_K and Q5_K
// store them. It writes d and dmin (f16) to b[0:4], the packed scales to
// b[4:16], and the final codes (re-derived from the rounded scales, as the
// reference does) to L.
func kSubScales(x []float32, nmax int, rmin, rdelta float32, nstep int, b []byte, L *[256]uint8) {
	var (
		scales, mins [8]float32
		w            [32]float32
		laux         [32]uint8
		maxScale     float32
		maxMin       float32
	)
	for j := 0; j < 8; j++ {
		g := x[32*j : 32*j+32]
		var sumX2 float32
		for _, v := range g {
			sumX2 += v * v
		}
		av := sqrt32(sumX2 / 32)
		for l, v := range g {
			w[l] = av + abs32(v)
		}
		scales[j], mins[j] = makeQKX2(g, w[:], nmax, L[32*j:32*j+32], laux[:], rmin, rdelta, nstep)
		maxScale = max(maxScale, scales[j])
		maxMin = max(maxMin, mins[j])
	}
	var invScale, invMin float32
	if maxScale > 0 {
		invScale = 63 / maxScale
	}
	if maxMin > 0 {
		invMin = 63 / maxMin
	}
	s := b[4:16]
	clear(s)
	for j := 0; j < 8; j++ {
		ls := uint8(min(63, nearestInt(invScale*scales[j])))
		lm := uint8(min(63, nearestInt(invMin*mins[j])))
		if j < 4 {
			s[j], s[j+4] = ls, lm
		} else {
			s[j+4] = ls&0xf | (lm&0xf)<<4
			s[j-4] |= (ls >> 4) << 6
			s[j] |= (lm >> 4) << 6
		}
	}
	putF16(b, 0, maxScale/63)
	putF16(b, 2, maxMin/63)
	d, dmin := f16At(b, 0), f16At(b, 2)
	for j := 0; j < 8; j++ {
		sc, m := kScaleMin(j, s)
		dj := d * float32(sc)
		if dj == 0 {
			continue
		}
		dm := dmin * float32(m)
		for i := 0; i < 32; i++ {
			L[32*j+i] = uint8(clampInt(nearestInt((x[32*j+i]+dm)/dj), 0, nmax))
		}
	}
}

func encodeQ4_K(x []float32, b []byte) {
	var L [256]uint8
	kSubScales(x, 15, -1, 0.1, 20, b, &L)
	q := b[16:144]
	for c := 0; c < 4; c++ {
		for l := 0; l < 32; l++ {
			q[32*c+l] = L[64*c+l] | L[64*c+32+l]<<4
		}
	}
}

func encodeQ5_K(x []float32, b []byte) {
	var L [256]uint8
	kSubScales(x, 31, -0.5, 0.1, 15, b, &L)
	qh, ql := b[16:48], b[48:176]
	clear(qh)
	for c := 0; c < 4; c++ {
		m1, m2 := uint8(1)<<(2*c), uint8(2)<<(2*c)
		for j := 0; j < 32; j++ {
			l1, l2 := L[64*c+j], L[64*c+32+j]
			if l1 > 15 {
				l1 -= 16
				qh[j] |= m1
			}
			if l2 > 15 {
				l2 -= 16
				qh[j] |= m2
			}
			ql[32*c+j] = l1 | l2<<4
		}
	}
}

func encodeQ6_K(x []float32, b []byte) {
	var (
		L       [256]uint8
		scales  [16]float32
		maxSc   float32
		maxAbsS float32
	)
	for ib := 0; ib < 16; ib++ {
		scales[ib] = makeQX(x[16*ib:16*ib+16], 32, L[16*ib:16*ib+16])
		if a := abs32(scales[ib]); a > maxAbsS {
			maxAbsS, maxSc = a, scales[ib]
		}
	}
	clear(b)
	if maxAbsS < groupMaxEps {
		return
	}
	iscale := -128 / maxSc
	putF16(b, 208, 1/iscale)
	d := f16At(b, 208)
	sc := b[192:208]
	for ib := 0; ib < 16; ib++ {
		sc[ib] = byte(int8(clampInt(nearestInt(iscale*scales[ib]), -128, 127)))
	}
	for j := 0; j < 16; j++ {
		dj := d * float32(int8(sc[j]))
		if dj == 0 {
			continue
		}
		for i := 0; i < 16; i++ {
			L[16*j+i] = uint8(32 + clampInt(nearestInt(x[16*j+i]/dj), -32, 31))
		}
	}
	for h := 0; h < 2; h++ {
		ql, qh := b[64*h:64*h+64], b[128+32*h:128+32*h+32]
		Lh := L[128*h : 128*h+128]
		for l := 0; l < 32; l++ {
			q1, q2, q3, q4 := Lh[l], Lh[l+32], Lh[l+64], Lh[l+96]
			ql[l] = q1&0xf | (q3&0xf)<<4
			ql[l+32] = q2&0xf | (q4&0xf)<<4
			qh[l] = q1>>4 | (q2>>4)<<2 | (q3>>4)<<4 | (q4>>4)<<6
		}
	}
}
