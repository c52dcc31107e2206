package cpu

import (
	"errors"
	"fmt"
	"log/slog"
	"unsafe"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// Sentinel errors.
var (
	// ErrInvalidConfig reports a Config that fails Validate.
	ErrInvalidConfig = errors.New("cpu: invalid config")
	// ErrInvalidWeight reports weight data that does not match its shape or
	// type.
	ErrInvalidWeight = errors.New("cpu: invalid weight")
	// ErrUnsupportedType reports a tensor type the backend cannot compute
	// with.
	ErrUnsupportedType = errors.New("cpu: unsupported tensor type")
	// ErrClosed reports use of a closed Backend or KVCache.
	ErrClosed = errors.New("cpu: closed")
	// ErrBlockRange reports a KV block or layer index out of range, or a
	// buffer of the wrong size.
	ErrBlockRange = errors.New("cpu: block out of range")
	// ErrResources reports that the OS refused threads or memory.
	ErrResources = errors.New("cpu: out of resources")
)

// Backend is the CPU implementation of kernels.Backend.
type Backend struct {
	cfg     Config
	log     *slog.Logger
	kern    *cKernels
	pool    *cPool
	closed  bool
	scratch []byte    // quantized activations of the MatMul in progress
	deq     []float32 // per-thread dequantized weight tiles (kernels.ActF32)

	// Attention marshalling buffers, reused across calls.
	attSeqs, attBlocks, attItems []int32
	attScratch                   []float32
}

var _ kernels.Backend = (*Backend)(nil)

// New starts a Backend with cfg.Threads-1 pool threads. logger may be nil.
func New(cfg Config, logger *slog.Logger) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pool := newPool(cfg.Threads)
	if pool == nil {
		return nil, fmt.Errorf("%w: starting %d kernel threads", ErrResources, cfg.Threads)
	}
	kern := newKernels(cfg.MaxLevel)
	logger.Info("cpu backend ready", "kernels", kern.name, "threads", cfg.Threads)
	return &Backend{cfg: cfg, log: logger, kern: kern, pool: pool}, nil
}

// Name reports the backend and its kernel level, e.g. "cpu/avx512vnni".
func (b *Backend) Name() string { return "cpu/" + b.kern.name + "/" + b.cfg.Activations.String() }

// Level is the kernel level in use.
func (b *Backend) Level() Level { return b.kern.level }

// Threads is the number of threads kernels run on.
func (b *Backend) Threads() int { return b.cfg.Threads }

// Close joins the pool threads. Tensors, weights and caches created by b must
// not be used afterwards; caches are closed separately.
func (b *Backend) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	b.pool.free()
	b.kern.free()
	return nil
}

// tensor is a row-major float32 matrix in Go memory. The C kernels read and
// write it only during a call, which cgo's pointer rules allow.
type tensor struct {
	rows, cols int
	data       []float32
}

func (t *tensor) Rows() int { return t.rows }
func (t *tensor) Cols() int { return t.cols }

var _ kernels.Tensor = (*tensor)(nil)

// NewTensor allocates a zeroed rows x cols tensor.
func (b *Backend) NewTensor(rows, cols int) kernels.Tensor {
	if rows < 0 || cols < 0 || (cols > 0 && rows > maxElems/cols) {
		panic(fmt.Sprintf("cpu: NewTensor(%d, %d): bad shape", rows, cols))
	}
	return &tensor{rows: rows, cols: cols, data: make([]float32, rows*cols)}
}

// maxElems bounds one tensor so rows*cols never overflows the C int math.
const maxElems = 1 << 31

// Write copies src into t.
func (b *Backend) Write(t kernels.Tensor, src []float32) {
	tt := b.ten(t, "Write")
	if len(src) != len(tt.data) {
		panic(fmt.Sprintf("cpu: Write: %d values into a %dx%d tensor", len(src), tt.rows, tt.cols))
	}
	copy(tt.data, src)
}

// Read copies t into dst.
func (b *Backend) Read(dst []float32, t kernels.Tensor) {
	tt := b.ten(t, "Read")
	if len(dst) != len(tt.data) {
		panic(fmt.Sprintf("cpu: Read: %dx%d tensor into %d values", tt.rows, tt.cols, len(dst)))
	}
	copy(dst, tt.data)
}

// ten unwraps a tensor made by this backend; anything else is a programmer
// error.
func (b *Backend) ten(t kernels.Tensor, op string) *tensor {
	tt, ok := t.(*tensor)
	if !ok {
		panic(fmt.Sprintf("cpu: %s: tensor %T was not made by the cpu backend", op, t))
	}
	if b.closed {
		panic("cpu: " + op + " on a closed backend")
	}
	return tt
}

// weight is a matrix in a quant format; data is the caller's slice, not a
// copy.
type weight struct {
	typ        quant.Type
	rows, cols int
	data       []byte
}

func (w *weight) Type() quant.Type { return w.typ }
func (w *weight) Rows() int        { return w.rows }
func (w *weight) Cols() int        { return w.cols }

var _ kernels.Weight = (*weight)(nil)

// computable lists the weight types with kernels.
var computable = [...]quant.Type{quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1,
	quant.Q5_0, quant.Q5_1, quant.Q8_0, quant.Q4_K, quant.Q5_K, quant.Q6_K}

func isComputable(t quant.Type) bool {
	for _, c := range computable {
		if c == t {
			return true
		}
	}
	return false
}

// NewWeight wraps data without copying it; data must stay valid and
// unmodified for the weight's lifetime.
func (b *Backend) NewWeight(t quant.Type, rows, cols int, data []byte) (kernels.Weight, error) {
	if !isComputable(t) {
		return nil, fmt.Errorf("%w: %v", ErrUnsupportedType, t)
	}
	if rows <= 0 || cols <= 0 || cols%t.BlockSize() != 0 {
		return nil, fmt.Errorf("%w: %v %dx%d (cols must be a positive multiple of %d)",
			ErrInvalidWeight, t, rows, cols, t.BlockSize())
	}
	rb := t.RowBytes(cols)
	if rows > maxElems/cols || rb <= 0 || int64(rb)*int64(rows) != int64(len(data)) {
		return nil, fmt.Errorf("%w: %v %dx%d needs %d bytes, got %d",
			ErrInvalidWeight, t, rows, cols, int64(rb)*int64(rows), len(data))
	}
	return &weight{typ: t, rows: rows, cols: cols, data: data}, nil
}

func (b *Backend) wt(w kernels.Weight, op string) *weight {
	ww, ok := w.(*weight)
	if !ok {
		panic(fmt.Sprintf("cpu: %s: weight %T was not made by the cpu backend", op, w))
	}
	return ww
}

// MatMul sets dst[T, w.Rows] = x[T, w.Cols] · wᵀ.
func (b *Backend) MatMul(dst, x kernels.Tensor, w kernels.Weight) {
	d, xx, ww := b.ten(dst, "MatMul"), b.ten(x, "MatMul"), b.wt(w, "MatMul")
	if xx.cols != ww.cols || d.rows != xx.rows || d.cols != ww.rows {
		panic(fmt.Sprintf("cpu: MatMul: dst %dx%d = x %dx%d · w(%dx%d)ᵀ", d.rows, d.cols, xx.rows, xx.cols, ww.rows, ww.cols))
	}
	if xx.rows == 0 {
		return
	}
	if b.cfg.Activations == kernels.ActF32 && ww.typ != quant.F32 && ww.typ != quant.F16 && ww.typ != quant.BF16 {
		if !cMatMulF32Act(b.pool, b.kern, uint32(ww.typ), ww.data, ww.rows, ww.cols, xx.data, xx.rows, d.data, &b.deq) {
			panic(fmt.Sprintf("cpu: MatMul: no kernel for %v", ww.typ))
		}
		return
	}
	need := xx.rows * actBytes(uint32(ww.typ), ww.cols)
	if len(b.scratch) < need {
		b.scratch = make([]byte, need)
	}
	if !cMatMul(b.pool, b.kern, uint32(ww.typ), ww.data, ww.rows, ww.cols, xx.data, xx.rows, d.data, b.scratch) {
		panic(fmt.Sprintf("cpu: MatMul: no kernel for %v", ww.typ))
	}
}

// Embed sets dst row i to row ids[i] of table, dequantized.
func (b *Backend) Embed(dst kernels.Tensor, table kernels.Weight, ids []int32) {
	d, tw := b.ten(dst, "Embed"), b.wt(table, "Embed")
	if d.rows != len(ids) || d.cols != tw.cols {
		panic(fmt.Sprintf("cpu: Embed: %d ids of width %d into %dx%d", len(ids), tw.cols, d.rows, d.cols))
	}
	for i, id := range ids {
		if id < 0 || int(id) >= tw.rows {
			panic(fmt.Sprintf("cpu: Embed: id %d (row %d) outside table of %d rows", id, i, tw.rows))
		}
	}
	if len(ids) > 0 {
		cEmbed(b.pool, d.data, uint32(tw.typ), tw.data, tw.cols, ids)
	}
}

// RMSNorm sets dst = x / sqrt(mean(x²)+eps) * w per row; w is F32 with
// x.Cols values.
func (b *Backend) RMSNorm(dst, x kernels.Tensor, w kernels.Weight, eps float32) {
	d, xx, ww := b.ten(dst, "RMSNorm"), b.ten(x, "RMSNorm"), b.wt(w, "RMSNorm")
	if ww.typ != quant.F32 || ww.rows*ww.cols != xx.cols || d.rows != xx.rows || d.cols != xx.cols {
		panic(fmt.Sprintf("cpu: RMSNorm: dst %dx%d, x %dx%d, w %v %dx%d", d.rows, d.cols, xx.rows, xx.cols, ww.typ, ww.rows, ww.cols))
	}
	if xx.rows > 0 {
		cRMSNorm(b.pool, d.data, xx.data, f32View(ww.data), xx.rows, xx.cols, eps)
	}
}

// f32View reinterprets little-endian float32 bytes without copying.
func f32View(p []byte) []float32 {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(unsafe.SliceData(p))), len(p)/4)
}

// RoPE rotates x in place; pos[i] is row i's position.
func (b *Backend) RoPE(x kernels.Tensor, pos []int32, p kernels.RoPEParams) {
	xx := b.ten(x, "RoPE")
	if p.Heads <= 0 || p.HeadDim <= 0 || xx.cols != p.Heads*p.HeadDim || len(pos) != xx.rows ||
		p.Dims <= 0 || p.Dims > p.HeadDim || p.Dims%2 != 0 {
		panic(fmt.Sprintf("cpu: RoPE: x %dx%d, %d positions, %+v", xx.rows, xx.cols, len(pos), p))
	}
	if xx.rows > 0 {
		cRoPE(b.pool, xx.data, pos, xx.rows, xx.cols, p.Heads, p.HeadDim, p.Dims, p.Base, p.FreqScale, p.Interleaved)
	}
}

// Add sets dst += x.
func (b *Backend) Add(dst, x kernels.Tensor) {
	d, xx := b.ten(dst, "Add"), b.ten(x, "Add")
	if d.rows != xx.rows || d.cols != xx.cols {
		panic(fmt.Sprintf("cpu: Add: %dx%d += %dx%d", d.rows, d.cols, xx.rows, xx.cols))
	}
	if d.rows > 0 {
		cAdd(b.pool, d.data, xx.data, d.rows, d.cols)
	}
}

// SwiGLU sets dst = silu(gate) * up.
func (b *Backend) SwiGLU(dst, gate, up kernels.Tensor) {
	d, g, u := b.ten(dst, "SwiGLU"), b.ten(gate, "SwiGLU"), b.ten(up, "SwiGLU")
	if d.rows != g.rows || d.cols != g.cols || u.rows != g.rows || u.cols != g.cols {
		panic(fmt.Sprintf("cpu: SwiGLU: dst %dx%d, gate %dx%d, up %dx%d", d.rows, d.cols, g.rows, g.cols, u.rows, u.cols))
	}
	if d.rows > 0 {
		cSwiGLU(b.pool, b.kern, d.data, g.data, u.data, d.rows, d.cols)
	}
}

// Gather sets dst row i to src row rows[i].
func (b *Backend) Gather(dst, src kernels.Tensor, rows []int32) {
	d, s := b.ten(dst, "Gather"), b.ten(src, "Gather")
	if d.rows != len(rows) || d.cols != s.cols {
		panic(fmt.Sprintf("cpu: Gather: %d rows of width %d into %dx%d", len(rows), s.cols, d.rows, d.cols))
	}
	for i, r := range rows {
		if r < 0 || int(r) >= s.rows {
			panic(fmt.Sprintf("cpu: Gather: row %d (index %d) outside %d rows", r, i, s.rows))
		}
		copy(d.data[i*d.cols:(i+1)*d.cols], s.data[int(r)*s.cols:(int(r)+1)*s.cols])
	}
}
