package cuda

import (
	"fmt"
	"log/slog"
	"runtime"
	"sync"

	"github.com/tandemserve/tandem/kernels"
	"github.com/tandemserve/tandem/kernels/quant"
)

// Backend runs kernels on one GPU. Like every kernels.Backend it is used by
// one goroutine at a time; KVCache block I/O may run concurrently (it uses its
// own stream).
type Backend struct {
	lib  *library
	ctx  uintptr
	info DeviceInfo
	log  *slog.Logger
	mem  *pool
	attn attnCache // last attention work list, see attnCache
	err  error     // first failure, see Err
}

var _ kernels.Backend = (*Backend)(nil)

// New loads the kernel library and opens cfg.Device. It returns an error
// wrapping ErrNoCUDA when the library is missing or no CUDA device is
// usable, so callers can fall back or report "--backend cuda" as unavailable.
func New(cfg Config) (*Backend, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	lib, err := openLibrary(cfg.LibPath)
	if err != nil {
		return nil, err
	}
	devs, err := lib.devices()
	if err != nil {
		lib.close()
		return nil, fmt.Errorf("%w: no CUDA device: %w", ErrNoCUDA, err)
	}
	if len(devs) == 0 {
		lib.close()
		return nil, fmt.Errorf("%w: no CUDA device", ErrNoCUDA)
	}
	if cfg.Device >= len(devs) {
		lib.close()
		return nil, fmt.Errorf("%w: device %d requested, %d present", ErrNoCUDA, cfg.Device, len(devs))
	}
	ctx, err := lib.create(cfg.Device)
	if err != nil {
		lib.close()
		return nil, err
	}
	b := &Backend{lib: lib, ctx: ctx, info: devs[cfg.Device], log: log.With("backend", "cuda", "device", cfg.Device)}
	b.mem = &pool{lib: lib, ctx: ctx, free: map[int][]uintptr{}, all: map[uintptr]int{}, ctxs: map[uintptr]bool{}}
	b.log.Debug("cuda backend ready", "gpu", b.info.Name, "library", lib.path)
	if cfg.Activations == kernels.ActF32 {
		b.log.Info("cuda backend runs 8-bit activations: f32 activations are not implemented on CUDA",
			"requested", kernels.ActF32.String(), "using", kernels.ActQ8.String())
	}
	return b, nil
}

// Name implements kernels.Backend.
func (b *Backend) Name() string { return "cuda" }

// Device describes the GPU the backend runs on.
func (b *Backend) Device() DeviceInfo { return b.info }

// Err returns the first failure recorded by a compute method, or nil.
func (b *Backend) Err() error { return b.err }

// Sync waits for every launched kernel and returns Err, or the error the
// device reported while running them.
func (b *Backend) Sync() error {
	if b.err != nil {
		return b.err
	}
	if b.lib == nil {
		return ErrClosed
	}
	b.fail(b.lib.sync(b.ctx))
	return b.err
}

// fail records err (the first one wins) and reports whether the call must
// stop. It logs the first failure: later calls on a failed stream fail too.
func (b *Backend) fail(err error) bool {
	if err == nil {
		return b.err != nil
	}
	if b.err == nil {
		b.err = err
		b.log.Error("cuda backend failed", "err", err)
	}
	return true
}

// ready reports whether compute calls may proceed.
func (b *Backend) ready() bool {
	if b.lib == nil {
		return !b.fail(ErrClosed)
	}
	return b.err == nil
}

// Close frees every allocation of the backend and unloads the library.
func (b *Backend) Close() error {
	if b.lib == nil {
		return nil
	}
	err := b.mem.close()
	if e := b.lib.destroy(b.ctx); err == nil {
		err = e
	}
	b.lib.close()
	b.lib = nil
	return err
}

// pool owns the backend's device allocations. Activation tensors that become
// unreachable return their memory to free (from a runtime cleanup, on
// another goroutine, hence the mutex); NewTensor reuses it. Everything is
// released at close.
type pool struct {
	lib    *library
	ctx    uintptr
	mu     sync.Mutex
	free   map[int][]uintptr // reusable tensor memory by byte size
	all    map[uintptr]int   // every live allocation and its size
	ctxs   map[uintptr]bool  // extra contexts (KV cache I/O streams)
	closed bool
}

// addCtx records a context to destroy at close.
func (p *pool) addCtx(ctx uintptr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ctxs[ctx] = true
}

// dropCtx destroys ctx now unless the pool already closed (and destroyed
// it).
func (p *pool) dropCtx(ctx uintptr) error {
	p.mu.Lock()
	owned := p.ctxs[ctx] && !p.closed
	delete(p.ctxs, ctx)
	p.mu.Unlock()
	if !owned {
		return nil
	}
	return p.lib.destroy(ctx)
}

func (p *pool) alloc(bytes int) (uintptr, error) {
	ptr, err := p.lib.malloc(p.ctx, bytes)
	if err != nil {
		return 0, err
	}
	p.mu.Lock()
	p.all[ptr] = bytes
	p.mu.Unlock()
	return ptr, nil
}

// reuse pops a free tensor buffer of exactly bytes, if any.
func (p *pool) reuse(bytes int) (uintptr, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l := p.free[bytes]
	if len(l) == 0 {
		return 0, false
	}
	ptr := l[len(l)-1]
	p.free[bytes] = l[:len(l)-1]
	return ptr, true
}

// recycle is the tensor cleanup: no CUDA call, just bookkeeping.
func (p *pool) recycle(bytes int, ptr uintptr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.free[bytes] = append(p.free[bytes], ptr)
}

// release frees one allocation now (weights and caches).
func (p *pool) release(ptr uintptr) error {
	p.mu.Lock()
	_, ok := p.all[ptr]
	delete(p.all, ptr)
	closed := p.closed
	p.mu.Unlock()
	if !ok || closed {
		return nil
	}
	return p.lib.free(p.ctx, ptr)
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var first error
	for ptr := range p.all {
		if err := p.lib.free(p.ctx, ptr); err != nil && first == nil {
			first = err
		}
	}
	for ctx := range p.ctxs {
		if err := p.lib.destroy(ctx); err != nil && first == nil {
			first = err
		}
	}
	p.all, p.free, p.ctxs = nil, nil, nil
	return first
}

// Tensor is a row-major float32 matrix in device memory.
type Tensor struct {
	b          *Backend
	ptr        uintptr
	rows, cols int
}

var _ kernels.Tensor = (*Tensor)(nil)

// Rows implements kernels.Tensor.
func (t *Tensor) Rows() int { return t.rows }

// Cols implements kernels.Tensor.
func (t *Tensor) Cols() int { return t.cols }

// NewTensor implements kernels.Backend. On a device failure it returns a
// tensor with no memory and records the error (see Err); calls using it then
// do nothing.
func (b *Backend) NewTensor(rows, cols int) kernels.Tensor {
	if rows < 0 || cols < 0 {
		panic(fmt.Sprintf("cuda: NewTensor(%d, %d): negative shape", rows, cols))
	}
	t := &Tensor{b: b, rows: rows, cols: cols}
	bytes := rows * cols * 4
	if bytes == 0 || !b.ready() {
		return t
	}
	if ptr, ok := b.mem.reuse(bytes); ok {
		if b.fail(b.lib.memset(b.ctx, ptr, bytes)) {
			b.mem.recycle(bytes, ptr)
			return t
		}
		t.ptr = ptr
	} else {
		ptr, err := b.mem.alloc(bytes)
		if b.fail(err) {
			return t
		}
		t.ptr = ptr
	}
	runtime.AddCleanup(t, func(ptr uintptr) { b.mem.recycle(bytes, ptr) }, t.ptr)
	return t
}

// tensor unwraps a kernels.Tensor of this backend; anything else is a
// programmer error.
func (b *Backend) tensor(t kernels.Tensor, op string) *Tensor {
	ct, ok := t.(*Tensor)
	if !ok || ct.b != b {
		panic(fmt.Sprintf("cuda: %s: tensor %T is not from this backend", op, t))
	}
	return ct
}

// Write implements kernels.Backend.
func (b *Backend) Write(t kernels.Tensor, src []float32) {
	ct := b.tensor(t, "Write")
	mustShape(len(src) == ct.rows*ct.cols, "Write", ct)
	if len(src) == 0 || !b.ready() || ct.ptr == 0 {
		return
	}
	b.fail(b.lib.upload(b.ctx, ct.ptr, unsafePointer(src), len(src)*4))
}

// Read implements kernels.Backend. It waits for every kernel launched
// before it. On failure dst is zeroed and the error recorded.
func (b *Backend) Read(dst []float32, t kernels.Tensor) {
	ct := b.tensor(t, "Read")
	mustShape(len(dst) == ct.rows*ct.cols, "Read", ct)
	if len(dst) == 0 {
		return
	}
	if !b.ready() || ct.ptr == 0 || b.fail(b.lib.download(b.ctx, unsafePointer(dst), ct.ptr, len(dst)*4)) {
		clear(dst)
	}
}

// Weight is a weight matrix in device memory, repacked for the kernels.
type Weight struct {
	b          *Backend
	ptr        uintptr
	typ        quant.Type
	rows, cols int
}

var _ kernels.Weight = (*Weight)(nil)

// Type implements kernels.Weight.
func (w *Weight) Type() quant.Type { return w.typ }

// Rows implements kernels.Weight.
func (w *Weight) Rows() int { return w.rows }

// Cols implements kernels.Weight.
func (w *Weight) Cols() int { return w.cols }

// Close frees the weight's device memory; the backend's Close frees
// weights that were not closed.
func (w *Weight) Close() error {
	if w.ptr == 0 {
		return nil
	}
	err := w.b.mem.release(w.ptr)
	w.ptr = 0
	return err
}

// Supported reports whether the kernels compute with weights of type t.
func Supported(t quant.Type) bool {
	switch t {
	case quant.F32, quant.F16, quant.BF16, quant.Q4_0, quant.Q4_1, quant.Q5_0, quant.Q5_1, quant.Q8_0,
		quant.Q4_K, quant.Q5_K, quant.Q6_K:
		return true
	}
	return false
}

// NewWeight implements kernels.Backend: it copies data (ggml encoding) to
// the device.
func (b *Backend) NewWeight(t quant.Type, rows, cols int, data []byte) (kernels.Weight, error) {
	if b.lib == nil {
		return nil, ErrClosed
	}
	if !Supported(t) {
		return nil, fmt.Errorf("%w: %v weights (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", ErrUnsupported, t)
	}
	rb := t.RowBytes(cols)
	if rows <= 0 || cols <= 0 || rb < 0 || len(data) != rb*rows {
		return nil, fmt.Errorf("%w: %v weight %dx%d with %d bytes", ErrInvalidArgument, t, rows, cols, len(data))
	}
	size, err := b.lib.weightBytes(int(t), rows, cols)
	if err != nil {
		return nil, err
	}
	ptr, err := b.mem.alloc(size)
	if err != nil {
		return nil, err
	}
	if err := b.lib.weightLoad(b.ctx, ptr, int(t), rows, cols, data); err != nil {
		_ = b.mem.release(ptr)
		return nil, err
	}
	return &Weight{b: b, ptr: ptr, typ: t, rows: rows, cols: cols}, nil
}

func (b *Backend) weight(w kernels.Weight, op string) *Weight {
	cw, ok := w.(*Weight)
	if !ok || cw.b != b {
		panic(fmt.Sprintf("cuda: %s: weight %T is not from this backend", op, w))
	}
	return cw
}

func mustShape(ok bool, op string, t *Tensor) {
	if !ok {
		panic(fmt.Sprintf("cuda: %s shape mismatch: tensor %dx%d", op, t.rows, t.cols))
	}
}
