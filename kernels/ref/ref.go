// Package ref is the pure-Go reference implementation of kernels.Backend.
//
// It favours obviousness over speed: every operation is a plain loop over
// float32 slices, and quantized matrix products use kernels/quant's reference
// dot products, so its numerics define what the SIMD (kernels/cpu) and CUDA
// backends must reproduce. Tests of the model and engine run on it where the
// fast backends are unavailable, and the fast backends are tested against it.
package ref

import (
	"errors"
	"fmt"
	"math"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// Backend is the reference CPU backend.
type Backend struct {
	act kernels.Activations
}

var _ kernels.Backend = (*Backend)(nil)

// New returns a reference backend with full-precision activations.
func New() *Backend { return &Backend{} }

// NewWith returns a reference backend with the given activation precision.
func NewWith(act kernels.Activations) *Backend { return &Backend{act: act} }

// Name implements kernels.Backend.
func (b *Backend) Name() string { return "ref/" + b.act.String() }

// Close implements kernels.Backend.
func (*Backend) Close() error { return nil }

// Tensor is a host float32 matrix.
type Tensor struct {
	rows, cols int
	Data       []float32
}

var _ kernels.Tensor = (*Tensor)(nil)

// Rows implements kernels.Tensor.
func (t *Tensor) Rows() int { return t.rows }

// Cols implements kernels.Tensor.
func (t *Tensor) Cols() int { return t.cols }

// Row returns row i as a slice aliasing the tensor.
func (t *Tensor) Row(i int) []float32 { return t.Data[i*t.cols : (i+1)*t.cols] }

// Weight is a matrix in a quant format, referencing (not copying) its bytes.
type Weight struct {
	typ        quant.Type
	rows, cols int
	rowBytes   int
	data       []byte
}

var _ kernels.Weight = (*Weight)(nil)

// Type implements kernels.Weight.
func (w *Weight) Type() quant.Type { return w.typ }

// Rows implements kernels.Weight.
func (w *Weight) Rows() int { return w.rows }

// Cols implements kernels.Weight.
func (w *Weight) Cols() int { return w.cols }

// Row returns the encoded bytes of row i.
func (w *Weight) Row(i int) []byte { return w.data[i*w.rowBytes : (i+1)*w.rowBytes] }

// ErrShape reports weight data whose size does not match its declared shape.
var ErrShape = errors.New("ref: weight shape does not match its data")

// NewWeight implements kernels.Backend.
func (*Backend) NewWeight(t quant.Type, rows, cols int, data []byte) (kernels.Weight, error) {
	return NewWeight(t, rows, cols, data)
}

// NewWeight validates and wraps a weight matrix; other host backends share it.
func NewWeight(t quant.Type, rows, cols int, data []byte) (*Weight, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("ref: unsupported weight type %v", t)
	}
	rb := t.RowBytes(cols)
	if rows <= 0 || cols <= 0 || rb < 0 {
		return nil, fmt.Errorf("%w: %v %dx%d (columns must be a multiple of %d)", ErrShape, t, rows, cols, t.BlockSize())
	}
	if int64(rb)*int64(rows) != int64(len(data)) {
		return nil, fmt.Errorf("%w: %v %dx%d needs %d bytes, have %d", ErrShape, t, rows, cols, int64(rb)*int64(rows), len(data))
	}
	return &Weight{typ: t, rows: rows, cols: cols, rowBytes: rb, data: data}, nil
}

// NewTensor implements kernels.Backend.
func (*Backend) NewTensor(rows, cols int) kernels.Tensor {
	return &Tensor{rows: rows, cols: cols, Data: make([]float32, rows*cols)}
}

// Write implements kernels.Backend.
func (*Backend) Write(t kernels.Tensor, src []float32) {
	dst := t.(*Tensor)
	if len(src) != len(dst.Data) {
		panic(fmt.Sprintf("ref: Write of %d values into %dx%d tensor", len(src), dst.rows, dst.cols))
	}
	copy(dst.Data, src)
}

// Read implements kernels.Backend.
func (*Backend) Read(dst []float32, t kernels.Tensor) {
	src := t.(*Tensor)
	if len(dst) != len(src.Data) {
		panic(fmt.Sprintf("ref: Read of %dx%d tensor into %d values", src.rows, src.cols, len(dst)))
	}
	copy(dst, src.Data)
}

// DequantizeRow decodes row i of w into dst (len w.Cols()).
func DequantizeRow(w *Weight, i int, dst []float32) {
	if err := quant.Dequantize(w.typ, w.Row(i), dst); err != nil {
		panic(fmt.Sprintf("ref: dequantize %v row %d: %v", w.typ, i, err))
	}
}

// Embed implements kernels.Backend.
func (*Backend) Embed(dst kernels.Tensor, table kernels.Weight, ids []int32) {
	d, w := dst.(*Tensor), table.(*Weight)
	mustShape(d.rows == len(ids) && d.cols == w.cols, "Embed", d, w)
	for i, id := range ids {
		DequantizeRow(w, int(id), d.Row(i))
	}
}

// RMSNorm implements kernels.Backend.
func (*Backend) RMSNorm(dst, x kernels.Tensor, w kernels.Weight, eps float32) {
	d, xt, wt := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	mustShape(d.rows == xt.rows && d.cols == xt.cols && wt.cols == xt.cols && wt.rows == 1, "RMSNorm", d, wt)
	scale := make([]float32, wt.cols)
	DequantizeRow(wt, 0, scale)
	for r := 0; r < xt.rows; r++ {
		in, out := xt.Row(r), d.Row(r)
		var ss float64
		for _, v := range in {
			ss += float64(v) * float64(v)
		}
		inv := float32(1 / math.Sqrt(ss/float64(len(in))+float64(eps)))
		for i, v := range in {
			out[i] = v * inv * scale[i]
		}
	}
}

// MatMul implements kernels.Backend.
func (b *Backend) MatMul(dst, x kernels.Tensor, w kernels.Weight) {
	d, xt, wt := dst.(*Tensor), x.(*Tensor), w.(*Weight)
	mustShape(d.rows == xt.rows && d.cols == wt.rows && xt.cols == wt.cols, "MatMul", d, wt)
	float := wt.typ == quant.F32 || wt.typ == quant.F16 || wt.typ == quant.BF16
	switch {
	case float || b.act == kernels.ActF32:
		row := make([]float32, wt.cols)
		for o := 0; o < wt.rows; o++ {
			DequantizeRow(wt, o, row)
			for t := 0; t < xt.rows; t++ {
				var s float32
				for i, v := range xt.Row(t) {
					s += v * row[i]
				}
				d.Data[t*d.cols+o] = s
			}
		}
	default:
		at, _ := quant.ActivationType(wt.typ)
		act := make([]byte, at.RowBytes(wt.cols))
		for t := 0; t < xt.rows; t++ {
			if err := quant.QuantizeActivations(wt.typ, xt.Row(t), act); err != nil {
				panic(fmt.Sprintf("ref: MatMul activations for %v: %v", wt.typ, err))
			}
			out := d.Row(t)
			for o := 0; o < wt.rows; o++ {
				v, err := quant.VecDot(wt.typ, wt.Row(o), act, wt.cols)
				if err != nil {
					panic(fmt.Sprintf("ref: MatMul %v row %d: %v", wt.typ, o, err))
				}
				out[o] = v
			}
		}
	}
}

// RoPE implements kernels.Backend.
func (*Backend) RoPE(x kernels.Tensor, pos []int32, p kernels.RoPEParams) {
	xt := x.(*Tensor)
	mustShape(xt.rows == len(pos) && xt.cols == p.Heads*p.HeadDim && p.Dims <= p.HeadDim && p.Dims%2 == 0, "RoPE", xt, nil)
	half := p.Dims / 2
	cos, sin := make([]float32, half), make([]float32, half)
	for r := 0; r < xt.rows; r++ {
		RoPEAngles(pos[r], p, cos, sin)
		row := xt.Row(r)
		for h := 0; h < p.Heads; h++ {
			v := row[h*p.HeadDim : (h+1)*p.HeadDim]
			for i := 0; i < half; i++ {
				a, b := 2*i, 2*i+1
				if !p.Interleaved {
					a, b = i, i+half
				}
				x0, x1 := v[a], v[b]
				v[a] = x0*cos[i] - x1*sin[i]
				v[b] = x0*sin[i] + x1*cos[i]
			}
		}
	}
}

// RoPEAngles fills the rotation of position pos for each of the p.Dims/2
// frequency pairs: theta_i = pos * FreqScale * Base^(-2i/Dims), the same
// recurrence ggml uses, computed in float32 like ggml so that angles agree.
func RoPEAngles(pos int32, p kernels.RoPEParams, cos, sin []float32) {
	scale := p.FreqScale
	if scale == 0 {
		scale = 1
	}
	thetaScale := float32(math.Pow(float64(p.Base), -2.0/float64(p.Dims)))
	theta := float32(pos) * scale
	for i := range cos {
		s, c := math.Sincos(float64(theta))
		cos[i], sin[i] = float32(c), float32(s)
		theta *= thetaScale
	}
}

// Add implements kernels.Backend.
func (*Backend) Add(dst, x kernels.Tensor) {
	d, xt := dst.(*Tensor), x.(*Tensor)
	mustShape(d.rows == xt.rows && d.cols == xt.cols, "Add", d, nil)
	for i, v := range xt.Data {
		d.Data[i] += v
	}
}

// SwiGLU implements kernels.Backend.
func (*Backend) SwiGLU(dst, gate, up kernels.Tensor) {
	d, g, u := dst.(*Tensor), gate.(*Tensor), up.(*Tensor)
	mustShape(len(d.Data) == len(g.Data) && len(g.Data) == len(u.Data), "SwiGLU", d, nil)
	for i, gv := range g.Data {
		d.Data[i] = gv / (1 + float32(math.Exp(float64(-gv)))) * u.Data[i]
	}
}

// Gather implements kernels.Backend.
func (*Backend) Gather(dst, src kernels.Tensor, rows []int32) {
	d, s := dst.(*Tensor), src.(*Tensor)
	mustShape(d.rows == len(rows) && d.cols == s.cols, "Gather", d, nil)
	for i, r := range rows {
		copy(d.Row(i), s.Row(int(r)))
	}
}

func mustShape(ok bool, op string, t *Tensor, w *Weight) {
	if ok {
		return
	}
	if w != nil {
		panic(fmt.Sprintf("ref: %s shape mismatch: tensor %dx%d, weight %v %dx%d", op, t.rows, t.cols, w.typ, w.rows, w.cols))
	}
	panic(fmt.Sprintf("ref: %s shape mismatch: tensor %dx%d", op, t.rows, t.cols))
}
