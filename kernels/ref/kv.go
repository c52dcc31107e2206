package ref

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// KVCache is paged KV storage in ordinary Go memory.
type KVCache struct {
	spec    kernels.KVSpec
	regions [][]byte
}

var _ kernels.KVCache = (*KVCache)(nil)

// NewKVCache implements kernels.Backend.
func (*Backend) NewKVCache(spec kernels.KVSpec) (kernels.KVCache, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	c := &KVCache{spec: spec, regions: make([][]byte, spec.Layers)}
	for l := range c.regions {
		c.regions[l] = make([]byte, spec.Blocks*spec.BlockBytes())
	}
	return c, nil
}

// Spec implements kernels.KVCache.
func (c *KVCache) Spec() kernels.KVSpec { return c.spec }

// Region implements kernels.KVCache.
func (c *KVCache) Region(layer int) ([]byte, bool) { return c.regions[layer], true }

func (c *KVCache) block(layer, block int) ([]byte, error) {
	if layer < 0 || layer >= c.spec.Layers || block < 0 || block >= c.spec.Blocks {
		return nil, fmt.Errorf("ref: KV block %d of layer %d out of range (%d layers, %d blocks)", block, layer, c.spec.Layers, c.spec.Blocks)
	}
	n := c.spec.BlockBytes()
	return c.regions[layer][block*n : (block+1)*n], nil
}

// ReadBlock implements kernels.KVCache.
func (c *KVCache) ReadBlock(layer, block int, dst []byte) error {
	b, err := c.block(layer, block)
	if err != nil {
		return err
	}
	if len(dst) != len(b) {
		return fmt.Errorf("ref: ReadBlock into %d bytes, block is %d", len(dst), len(b))
	}
	copy(dst, b)
	return nil
}

// WriteBlock implements kernels.KVCache.
func (c *KVCache) WriteBlock(layer, block int, src []byte) error {
	b, err := c.block(layer, block)
	if err != nil {
		return err
	}
	if len(src) != len(b) {
		return fmt.Errorf("ref: WriteBlock of %d bytes, block is %d", len(src), len(b))
	}
	copy(b, src)
	return nil
}

// Close implements kernels.KVCache.
func (c *KVCache) Close() error { c.regions = nil; return nil }

// slotRows returns the key and value rows of slot in layer's region.
func slotRows(spec kernels.KVSpec, region []byte, slot int) (k, v []byte) {
	block, off := slot/spec.BlockSize, slot%spec.BlockSize
	base := block * spec.BlockBytes()
	rb := spec.RowBytes()
	ko, vo := base+spec.KeyRowOffset(off), base+spec.ValueRowOffset(off)
	return region[ko : ko+rb], region[vo : vo+rb]
}

// EncodeKVRow stores one token's keys or values (KVHeads*HeadDim floats) in
// the row format of spec.DType.
func EncodeKVRow(spec kernels.KVSpec, src []float32, dst []byte) {
	switch spec.DType {
	case kernels.KVInt8:
		hd := spec.HeadDim
		scales := dst[spec.KVHeads*hd:]
		for h := 0; h < spec.KVHeads; h++ {
			x := src[h*hd : (h+1)*hd]
			var amax float32
			for _, v := range x {
				amax = max(amax, float32(math.Abs(float64(v))))
			}
			scale := amax / 127
			inv := float32(0)
			if scale > 0 {
				inv = 1 / scale
			}
			for i, v := range x {
				dst[h*hd+i] = byte(int8(math.Round(float64(v * inv))))
			}
			binary.LittleEndian.PutUint32(scales[4*h:], math.Float32bits(scale))
		}
	default:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], quant.F32ToF16(v))
		}
	}
}

// DecodeKVRow is the inverse of EncodeKVRow.
func DecodeKVRow(spec kernels.KVSpec, src []byte, dst []float32) {
	switch spec.DType {
	case kernels.KVInt8:
		hd := spec.HeadDim
		scales := src[spec.KVHeads*hd:]
		for h := 0; h < spec.KVHeads; h++ {
			scale := math.Float32frombits(binary.LittleEndian.Uint32(scales[4*h:]))
			for i := 0; i < hd; i++ {
				dst[h*hd+i] = float32(int8(src[h*hd+i])) * scale
			}
		}
	default:
		for i := range dst {
			dst[i] = quant.F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	}
}

// StoreKV implements kernels.Backend.
func (*Backend) StoreKV(c kernels.KVCache, layer int, k, v kernels.Tensor, slots []int32) {
	kt, vt := k.(*Tensor), v.(*Tensor)
	spec := c.Spec()
	region, ok := c.Region(layer)
	if !ok {
		panic("ref: StoreKV needs a host-addressable KV cache")
	}
	mustShape(kt.rows == len(slots) && vt.rows == len(slots) && kt.cols == spec.KVHeads*spec.HeadDim && vt.cols == kt.cols, "StoreKV", kt, nil)
	for i, s := range slots {
		kr, vr := slotRows(spec, region, int(s))
		EncodeKVRow(spec, kt.Row(i), kr)
		EncodeKVRow(spec, vt.Row(i), vr)
	}
}

// Attention implements kernels.Backend: for each query, scores against every
// visible key, a max-subtracted softmax, then the weighted sum of values.
func (*Backend) Attention(dst, q kernels.Tensor, c kernels.KVCache, layer int, p kernels.AttnParams) {
	d, qt := dst.(*Tensor), q.(*Tensor)
	spec := c.Spec()
	region, ok := c.Region(layer)
	if !ok {
		panic("ref: Attention needs a host-addressable KV cache")
	}
	mustShape(qt.cols == p.Heads*p.HeadDim && d.cols == qt.cols && d.rows == qt.rows && p.Heads%p.KVHeads == 0, "Attention", qt, nil)
	group := p.Heads / p.KVHeads
	hd := p.HeadDim
	width := spec.KVHeads * spec.HeadDim
	for _, s := range p.Seqs {
		keys := make([][]float32, s.KVLen)
		vals := make([][]float32, s.KVLen)
		for j := 0; j < s.KVLen; j++ {
			slot := int(s.Blocks[j/spec.BlockSize])*spec.BlockSize + j%spec.BlockSize
			kr, vr := slotRows(spec, region, slot)
			keys[j], vals[j] = make([]float32, width), make([]float32, width)
			DecodeKVRow(spec, kr, keys[j])
			DecodeKVRow(spec, vr, vals[j])
		}
		scores := make([]float64, s.KVLen)
		for i := 0; i < s.QueryLen; i++ {
			row := s.QueryStart + i
			visible := s.KVLen - s.QueryLen + i + 1
			for h := 0; h < p.Heads; h++ {
				kvh := h / group
				qv := qt.Row(row)[h*hd : (h+1)*hd]
				maxScore := math.Inf(-1)
				for j := 0; j < visible; j++ {
					kv := keys[j][kvh*hd : (kvh+1)*hd]
					var dot float64
					for e := range qv {
						dot += float64(qv[e]) * float64(kv[e])
					}
					scores[j] = dot * float64(p.Scale)
					maxScore = math.Max(maxScore, scores[j])
				}
				var sum float64
				for j := 0; j < visible; j++ {
					scores[j] = math.Exp(scores[j] - maxScore)
					sum += scores[j]
				}
				out := d.Row(row)[h*hd : (h+1)*hd]
				for e := range out {
					var acc float64
					for j := 0; j < visible; j++ {
						acc += scores[j] * float64(vals[j][kvh*hd+e])
					}
					out[e] = float32(acc / sum)
				}
			}
		}
	}
}
