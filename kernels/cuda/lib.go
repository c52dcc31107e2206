package cuda

/*
#cgo LDFLAGS: -ldl
#cgo CFLAGS: -D_GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>
#include "tandem_cuda.h"

// tc_api is the library's function table, resolved with dlsym. Device
// pointers cross into Go as uintptr_t so that Go never holds a pointer it
// does not own.
typedef struct {
	void *handle;
	int (*abi_version)(void);
	void (*strerror)(int, char *, size_t);
	int (*device_count)(int *);
	int (*device_info)(int, tc_device_info *);
	int (*create)(int, tc_ctx **);
	int (*destroy)(tc_ctx *);
	int (*sync)(tc_ctx *);
	int (*malloc_)(tc_ctx *, size_t, void **);
	int (*free_)(tc_ctx *, void *);
	int (*upload)(tc_ctx *, void *, const void *, size_t);
	int (*download)(tc_ctx *, void *, const void *, size_t);
	int (*memset_)(tc_ctx *, void *, size_t);
	int (*weight_bytes)(int, int, int, size_t *);
	int (*weight_load)(tc_ctx *, void *, int, int, int, const void *, size_t);
	int (*embed)(tc_ctx *, float *, const void *, int, int, int, const int32_t *, int);
	int (*rmsnorm)(tc_ctx *, float *, const float *, const float *, int, int, float);
	int (*matmul)(tc_ctx *, float *, const float *, int, const void *, int, int, int);
	int (*rope)(tc_ctx *, float *, int, const int32_t *, int, int, int, float, float, int);
	int (*add)(tc_ctx *, float *, const float *, size_t);
	int (*swiglu)(tc_ctx *, float *, const float *, const float *, size_t);
	int (*gather)(tc_ctx *, float *, const float *, int, const int32_t *, int);
	int (*store_kv)(tc_ctx *, void *, int, int, int, int, const float *, const float *, const int32_t *, int);
	int (*attention)(tc_ctx *, float *, const float *, const void *, int, int, int, int, int, float,
	                 const tc_attn_task *, int, const int32_t *, int, const tc_attn_combine *, int, int, int);
	int (*nccl_available)(void);
	int (*nccl_init_all)(tc_ctx **, int, void **);
	int (*nccl_all_reduce_sum)(tc_ctx *, void *, float *, size_t);
	int (*nccl_destroy)(void *);
} tc_api;

#define TC_SYM(field, name)                          \
	do {                                             \
		*(void **)(&a->field) = dlsym(h, name);      \
		if (a->field == NULL) { dlclose(h); return name; } \
	} while (0)

// tc_open loads the library at path into a. It returns NULL on success, or
// the dlerror text or the name of a missing symbol.
//
// RTLD_NODELETE keeps the library mapped after the last dlclose: the CUDA
// runtime linked into it registers kernels and exit handlers that must not be
// unloaded and reinitialised each time a Backend closes and another opens.
static const char *tc_open(const char *path, tc_api *a) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE);
	if (h == NULL) return dlerror();
	TC_SYM(abi_version, "tandem_cuda_abi_version");
	TC_SYM(strerror, "tandem_cuda_strerror");
	TC_SYM(device_count, "tandem_cuda_device_count");
	TC_SYM(device_info, "tandem_cuda_device_info");
	TC_SYM(create, "tandem_cuda_create");
	TC_SYM(destroy, "tandem_cuda_destroy");
	TC_SYM(sync, "tandem_cuda_sync");
	TC_SYM(malloc_, "tandem_cuda_malloc");
	TC_SYM(free_, "tandem_cuda_free");
	TC_SYM(upload, "tandem_cuda_upload");
	TC_SYM(download, "tandem_cuda_download");
	TC_SYM(memset_, "tandem_cuda_memset");
	TC_SYM(weight_bytes, "tandem_cuda_weight_bytes");
	TC_SYM(weight_load, "tandem_cuda_weight_load");
	TC_SYM(embed, "tandem_cuda_embed");
	TC_SYM(rmsnorm, "tandem_cuda_rmsnorm");
	TC_SYM(matmul, "tandem_cuda_matmul");
	TC_SYM(rope, "tandem_cuda_rope");
	TC_SYM(add, "tandem_cuda_add");
	TC_SYM(swiglu, "tandem_cuda_swiglu");
	TC_SYM(gather, "tandem_cuda_gather");
	TC_SYM(store_kv, "tandem_cuda_store_kv");
	TC_SYM(attention, "tandem_cuda_attention");
	TC_SYM(nccl_available, "tandem_nccl_available");
	TC_SYM(nccl_init_all, "tandem_nccl_init_all");
	TC_SYM(nccl_all_reduce_sum, "tandem_nccl_all_reduce_sum");
	TC_SYM(nccl_destroy, "tandem_nccl_destroy");
	a->handle = h;
	return NULL;
}

static void tc_close(tc_api *a) { if (a->handle) dlclose(a->handle); a->handle = NULL; }

// Trampolines: cgo cannot call C function pointers directly.
#define P(x) ((void *)(x))
#define F(x) ((float *)(x))
#define CTX(x) ((tc_ctx *)(x))
static int t_abi(tc_api *a) { return a->abi_version(); }
static void t_strerror(tc_api *a, int code, char *buf, size_t n) { a->strerror(code, buf, n); }
static int t_device_count(tc_api *a, int *n) { return a->device_count(n); }
static int t_device_info(tc_api *a, int d, tc_device_info *o) { return a->device_info(d, o); }
static int t_create(tc_api *a, int d, uintptr_t *out) { tc_ctx *c = NULL; int rc = a->create(d, &c); *out = (uintptr_t)c; return rc; }
static int t_destroy(tc_api *a, uintptr_t c) { return a->destroy(CTX(c)); }
static int t_sync(tc_api *a, uintptr_t c) { return a->sync(CTX(c)); }
static int t_malloc(tc_api *a, uintptr_t c, size_t n, uintptr_t *out) { void *p = NULL; int rc = a->malloc_(CTX(c), n, &p); *out = (uintptr_t)p; return rc; }
static int t_free(tc_api *a, uintptr_t c, uintptr_t p) { return a->free_(CTX(c), P(p)); }
static int t_upload(tc_api *a, uintptr_t c, uintptr_t dst, const void *src, size_t n) { return a->upload(CTX(c), P(dst), src, n); }
static int t_download(tc_api *a, uintptr_t c, void *dst, uintptr_t src, size_t n) { return a->download(CTX(c), dst, P(src), n); }
static int t_memset(tc_api *a, uintptr_t c, uintptr_t p, size_t n) { return a->memset_(CTX(c), P(p), n); }
static int t_weight_bytes(tc_api *a, int t, int r, int cols, size_t *out) { return a->weight_bytes(t, r, cols, out); }
static int t_weight_load(tc_api *a, uintptr_t c, uintptr_t w, int t, int r, int cols, const void *src, size_t n) { return a->weight_load(CTX(c), P(w), t, r, cols, src, n); }
static int t_embed(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t tab, int t, int r, int cols, const int32_t *ids, int n) { return a->embed(CTX(c), F(dst), P(tab), t, r, cols, ids, n); }
static int t_rmsnorm(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t x, uintptr_t w, int r, int cols, float eps) { return a->rmsnorm(CTX(c), F(dst), F(x), F(w), r, cols, eps); }
static int t_matmul(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t x, int t, uintptr_t w, int ty, int r, int cols) { return a->matmul(CTX(c), F(dst), F(x), t, P(w), ty, r, cols); }
static int t_rope(tc_api *a, uintptr_t c, uintptr_t x, int t, const int32_t *pos, int h, int hd, int dims, float base, float fs, int il) { return a->rope(CTX(c), F(x), t, pos, h, hd, dims, base, fs, il); }
static int t_add(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t x, size_t n) { return a->add(CTX(c), F(dst), F(x), n); }
static int t_swiglu(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t g, uintptr_t u, size_t n) { return a->swiglu(CTX(c), F(dst), F(g), F(u), n); }
static int t_gather(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t src, int cols, const int32_t *rows, int n) { return a->gather(CTX(c), F(dst), F(src), cols, rows, n); }
static int t_store_kv(tc_api *a, uintptr_t c, uintptr_t layer, int dt, int bs, int kvh, int hd, uintptr_t k, uintptr_t v, const int32_t *slots, int n) { return a->store_kv(CTX(c), P(layer), dt, bs, kvh, hd, F(k), F(v), slots, n); }
static int t_attention(tc_api *a, uintptr_t c, uintptr_t dst, uintptr_t q, uintptr_t layer, int dt, int bs, int h, int kvh, int hd, float scale,
                       const int32_t *tasks, int nt, const int32_t *tables, int ntab, const int32_t *comb, int ncomb, int nparts, int staged) {
	return a->attention(CTX(c), F(dst), F(q), P(layer), dt, bs, h, kvh, hd, scale, (const tc_attn_task *)tasks, nt, tables, ntab,
	                    (const tc_attn_combine *)comb, ncomb, nparts, staged);
}
static int t_nccl_available(tc_api *a) { return a->nccl_available(); }
static int t_nccl_init_all(tc_api *a, uintptr_t *ctxs, int n, uintptr_t *comms) { return a->nccl_init_all((tc_ctx **)ctxs, n, (void **)comms); }
static int t_nccl_all_reduce_sum(tc_api *a, uintptr_t c, uintptr_t comm, uintptr_t buf, size_t n) { return a->nccl_all_reduce_sum(CTX(c), P(comm), F(buf), n); }
static int t_nccl_destroy(tc_api *a, uintptr_t comm) { return a->nccl_destroy(P(comm)); }
*/
import "C"

import (
	"fmt"
	"os"
	"path/filepath"
	"unsafe"

	"github.com/tandemserve/tandem/kernels"
)

// libName is the file scripts/build-cuda.sh writes.
const libName = "libtandem_cuda.so"

// library is one dlopen of libtandem_cuda.so. Its function table lives in C
// memory (cgo forbids C keeping Go pointers) and is freed by close.
type library struct {
	api  *C.tc_api
	path string
}

// libraryCandidates lists where the library is looked for, in order: the
// explicit path, $TANDEM_CUDA_LIB, next to the executable, the build folder
// relative to the working directory (repository root or this package's
// folder, for tests), then the dynamic linker's search path.
func libraryCandidates(explicit string) []string {
	if explicit != "" {
		return []string{explicit}
	}
	var c []string
	if p := os.Getenv("TANDEM_CUDA_LIB"); p != "" {
		c = append(c, p)
	}
	if exe, err := os.Executable(); err == nil {
		dir := filepath.Dir(exe)
		c = append(c, filepath.Join(dir, libName), filepath.Join(dir, "..", "lib", libName))
	}
	c = append(c,
		filepath.Join("kernels", "cuda", "build", libName),
		filepath.Join("build", libName),
		libName, // LD_LIBRARY_PATH and the system paths
	)
	return c
}

// openLibrary loads the first candidate that exists and resolves.
func openLibrary(explicit string) (*library, error) {
	var tried []string
	for _, p := range libraryCandidates(explicit) {
		if filepath.IsAbs(p) || filepath.Base(p) != p {
			if _, err := os.Stat(p); err != nil {
				tried = append(tried, p)
				continue
			}
			if abs, err := filepath.Abs(p); err == nil {
				p = abs
			}
		}
		l, err := loadLibrary(p)
		if err == nil {
			return l, nil
		}
		if filepath.Base(p) != p || explicit != "" {
			// The file exists but does not load: that is worth reporting
			// as is rather than as "not found".
			return nil, err
		}
		tried = append(tried, p)
	}
	return nil, fmt.Errorf("%w: %s not found (run make kernels); tried %v", ErrNoCUDA, libName, tried)
}

func loadLibrary(path string) (*library, error) {
	api := (*C.tc_api)(C.calloc(1, C.size_t(unsafe.Sizeof(C.tc_api{}))))
	if api == nil {
		return nil, fmt.Errorf("cuda: out of host memory loading %s", path)
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	if msg := C.tc_open(cpath, api); msg != nil {
		C.free(unsafe.Pointer(api))
		return nil, fmt.Errorf("%w: loading %s: %s", ErrNoCUDA, path, C.GoString(msg))
	}
	l := &library{api: api, path: path}
	if v := int(C.t_abi(api)); v != abiVersion {
		l.close()
		return nil, fmt.Errorf("%w: %s has ABI version %d, want %d (rebuild with make kernels)", ErrABI, path, v, abiVersion)
	}
	return l, nil
}

func (l *library) close() {
	if l.api == nil {
		return
	}
	C.tc_close(l.api)
	C.free(unsafe.Pointer(l.api))
	l.api = nil
}

// abiVersion must match TANDEM_CUDA_ABI_VERSION in tandem_cuda.h.
const abiVersion = int(C.TANDEM_CUDA_ABI_VERSION)

// The work-list records are the sizes attention.go assumes.
var (
	_ = [1]int{}[int(unsafe.Sizeof(C.tc_attn_task{}))-4*taskInts]
	_ = [1]int{}[int(unsafe.Sizeof(C.tc_attn_combine{}))-4*combineInts]
	_ = [1]int{}[int(C.TC_ATTN_WARPS)-attnWarps]
)

// The library's KV row formats are kernels.KVDType's values (compile-time
// checks: a mismatch makes an out-of-range constant index).
var (
	_ = [1]int{}[int(C.TC_KV_F16)-int(kernels.KVF16)]
	_ = [1]int{}[int(C.TC_KV_INT8)-int(kernels.KVInt8)]
)

// Codes of the library's own errors (tandem_cuda.h).
const (
	codeArg         = int(C.TC_ERR_ARG)
	codeUnsupported = int(C.TC_ERR_UNSUPPORTED)
	codeNoNCCL      = int(C.TC_ERR_NO_NCCL)
)

// check turns a library return code into an error wrapping the matching
// sentinel.
func (l *library) check(op string, rc C.int) error {
	if rc == 0 {
		return nil
	}
	var buf [256]C.char
	C.t_strerror(l.api, rc, &buf[0], C.size_t(len(buf)))
	msg := C.GoString(&buf[0])
	switch int(rc) {
	case codeArg:
		return fmt.Errorf("%w: %s: %s", ErrInvalidArgument, op, msg)
	case codeUnsupported:
		return fmt.Errorf("%w: %s: %s", ErrUnsupported, op, msg)
	case codeNoNCCL:
		return fmt.Errorf("%w: %s: %s", ErrNoNCCL, op, msg)
	}
	return fmt.Errorf("%w: %s: %s (code %d)", ErrDevice, op, msg, int(rc))
}

// cInt converts a Go int to a library return code (used by tests, which
// cannot use cgo themselves).
func cInt(v int) C.int { return C.int(v) }

// i32p returns a C pointer to s's first element, or nil for an empty slice.
// The library only reads it during the call.
func i32p(s []int32) *C.int32_t {
	if len(s) == 0 {
		return nil
	}
	return (*C.int32_t)(unsafe.Pointer(&s[0]))
}

// The wrappers below are the only calls into C. ctx, device pointers and
// communicators are uintptr values the library handed out.

func (l *library) devices() ([]DeviceInfo, error) {
	var n C.int
	if err := l.check("device count", C.t_device_count(l.api, &n)); err != nil {
		return nil, err
	}
	out := make([]DeviceInfo, 0, int(n))
	for i := 0; i < int(n); i++ {
		var ci C.tc_device_info
		if err := l.check("device info", C.t_device_info(l.api, C.int(i), &ci)); err != nil {
			return nil, err
		}
		out = append(out, DeviceInfo{
			Index:             i,
			Name:              C.GoString(&ci.name[0]),
			TotalMemory:       uint64(ci.total_memory),
			ComputeCapability: [2]int{int(ci.cc_major), int(ci.cc_minor)},
			Multiprocessors:   int(ci.multiprocessors),
			MemoryBusBits:     int(ci.memory_bus_bits),
			MemoryClockKHz:    int(ci.memory_clock_khz),
			DriverVersion:     int(ci.driver_version),
			RuntimeVersion:    int(ci.runtime_version),
		})
	}
	return out, nil
}

func (l *library) create(device int) (uintptr, error) {
	var c C.uintptr_t
	err := l.check("create context", C.t_create(l.api, C.int(device), &c))
	return uintptr(c), err
}

func (l *library) destroy(ctx uintptr) error {
	return l.check("destroy context", C.t_destroy(l.api, C.uintptr_t(ctx)))
}

func (l *library) sync(ctx uintptr) error {
	return l.check("synchronize", C.t_sync(l.api, C.uintptr_t(ctx)))
}

func (l *library) malloc(ctx uintptr, bytes int) (uintptr, error) {
	var p C.uintptr_t
	err := l.check("malloc", C.t_malloc(l.api, C.uintptr_t(ctx), C.size_t(bytes), &p))
	return uintptr(p), err
}

func (l *library) free(ctx, p uintptr) error {
	return l.check("free", C.t_free(l.api, C.uintptr_t(ctx), C.uintptr_t(p)))
}

func (l *library) upload(ctx, dst uintptr, src unsafe.Pointer, bytes int) error {
	return l.check("upload", C.t_upload(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), src, C.size_t(bytes)))
}

func (l *library) download(ctx uintptr, dst unsafe.Pointer, src uintptr, bytes int) error {
	return l.check("download", C.t_download(l.api, C.uintptr_t(ctx), dst, C.uintptr_t(src), C.size_t(bytes)))
}

func (l *library) memset(ctx, p uintptr, bytes int) error {
	return l.check("memset", C.t_memset(l.api, C.uintptr_t(ctx), C.uintptr_t(p), C.size_t(bytes)))
}

func (l *library) weightBytes(typ, rows, cols int) (int, error) {
	var n C.size_t
	err := l.check("weight size", C.t_weight_bytes(l.api, C.int(typ), C.int(rows), C.int(cols), &n))
	return int(n), err
}

func (l *library) weightLoad(ctx, w uintptr, typ, rows, cols int, data []byte) error {
	var src unsafe.Pointer
	if len(data) > 0 {
		src = unsafe.Pointer(&data[0])
	}
	return l.check("weight load", C.t_weight_load(l.api, C.uintptr_t(ctx), C.uintptr_t(w), C.int(typ),
		C.int(rows), C.int(cols), src, C.size_t(len(data))))
}

func (l *library) embed(ctx, dst, table uintptr, typ, rows, cols int, ids []int32) error {
	return l.check("embed", C.t_embed(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(table),
		C.int(typ), C.int(rows), C.int(cols), i32p(ids), C.int(len(ids))))
}

func (l *library) rmsnorm(ctx, dst, x, w uintptr, rows, cols int, eps float32) error {
	return l.check("rmsnorm", C.t_rmsnorm(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(x),
		C.uintptr_t(w), C.int(rows), C.int(cols), C.float(eps)))
}

func (l *library) matmul(ctx, dst, x uintptr, t int, w uintptr, typ, rows, cols int) error {
	return l.check("matmul", C.t_matmul(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(x), C.int(t),
		C.uintptr_t(w), C.int(typ), C.int(rows), C.int(cols)))
}

func (l *library) rope(ctx, x uintptr, pos []int32, heads, headDim, dims int, base, freqScale float32, interleaved bool) error {
	il := C.int(0)
	if interleaved {
		il = 1
	}
	return l.check("rope", C.t_rope(l.api, C.uintptr_t(ctx), C.uintptr_t(x), C.int(len(pos)), i32p(pos),
		C.int(heads), C.int(headDim), C.int(dims), C.float(base), C.float(freqScale), il))
}

func (l *library) add(ctx, dst, x uintptr, n int) error {
	return l.check("add", C.t_add(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(x), C.size_t(n)))
}

func (l *library) swiglu(ctx, dst, gate, up uintptr, n int) error {
	return l.check("swiglu", C.t_swiglu(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(gate),
		C.uintptr_t(up), C.size_t(n)))
}

func (l *library) gather(ctx, dst, src uintptr, cols int, rows []int32) error {
	return l.check("gather", C.t_gather(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(src),
		C.int(cols), i32p(rows), C.int(len(rows))))
}

func (l *library) storeKV(ctx, layer uintptr, dtype kernels.KVDType, blockSize, kvHeads, headDim int, k, v uintptr, slots []int32) error {
	return l.check("store kv", C.t_store_kv(l.api, C.uintptr_t(ctx), C.uintptr_t(layer), C.int(dtype), C.int(blockSize),
		C.int(kvHeads), C.int(headDim), C.uintptr_t(k), C.uintptr_t(v), i32p(slots), C.int(len(slots))))
}

func (l *library) attention(ctx, dst, q, layer uintptr, dtype kernels.KVDType, blockSize, heads, kvHeads, headDim int,
	scale float32, w *attnWork, staged bool) error {
	st := C.int(0)
	if staged {
		st = 1
	}
	return l.check("attention", C.t_attention(l.api, C.uintptr_t(ctx), C.uintptr_t(dst), C.uintptr_t(q),
		C.uintptr_t(layer), C.int(dtype), C.int(blockSize), C.int(heads), C.int(kvHeads), C.int(headDim), C.float(scale),
		i32p(w.tasks), C.int(len(w.tasks)/taskInts), i32p(w.tables), C.int(len(w.tables)),
		i32p(w.combine), C.int(len(w.combine)/combineInts), C.int(w.parts), st))
}

func (l *library) ncclAvailable() bool { return C.t_nccl_available(l.api) != 0 }

func (l *library) ncclInitAll(ctxs []uintptr) ([]uintptr, error) {
	cc := (*C.uintptr_t)(C.calloc(C.size_t(len(ctxs)), C.size_t(unsafe.Sizeof(C.uintptr_t(0)))))
	comms := (*C.uintptr_t)(C.calloc(C.size_t(len(ctxs)), C.size_t(unsafe.Sizeof(C.uintptr_t(0)))))
	defer C.free(unsafe.Pointer(cc))
	defer C.free(unsafe.Pointer(comms))
	cs := unsafe.Slice(cc, len(ctxs))
	for i, c := range ctxs {
		cs[i] = C.uintptr_t(c)
	}
	if err := l.check("nccl init", C.t_nccl_init_all(l.api, cc, C.int(len(ctxs)), comms)); err != nil {
		return nil, err
	}
	out := make([]uintptr, len(ctxs))
	for i, c := range unsafe.Slice(comms, len(ctxs)) {
		out[i] = uintptr(c)
	}
	return out, nil
}

func (l *library) ncclAllReduceSum(ctx, comm, buf uintptr, n int) error {
	return l.check("nccl all-reduce", C.t_nccl_all_reduce_sum(l.api, C.uintptr_t(ctx), C.uintptr_t(comm),
		C.uintptr_t(buf), C.size_t(n)))
}

func (l *library) ncclDestroy(comm uintptr) error {
	return l.check("nccl destroy", C.t_nccl_destroy(l.api, C.uintptr_t(comm)))
}
