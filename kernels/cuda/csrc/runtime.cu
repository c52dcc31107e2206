// runtime.cu: contexts, memory, device inventory and error strings.
#include <initializer_list>
#include <new>
#include <stdio.h>
#include <string.h>

#include "common.cuh"

extern "C" int tandem_cuda_abi_version(void) { return TANDEM_CUDA_ABI_VERSION; }

extern "C" void tandem_cuda_strerror(int code, char *buf, size_t n) {
	if (buf == nullptr || n == 0) return;
	const char *msg;
	char tmp[64];
	if (code == TC_OK) {
		msg = "no error";
	} else if (code == TC_ERR_ARG) {
		msg = "invalid argument";
	} else if (code == TC_ERR_UNSUPPORTED) {
		msg = "unsupported format or shape";
	} else if (code == TC_ERR_NO_NCCL) {
		msg = "libnccl.so.2 not found";
	} else if (code <= TC_ERR_NCCL_BASE) {
		snprintf(tmp, sizeof tmp, "nccl error %d", TC_ERR_NCCL_BASE - code);
		msg = tmp;
	} else if (code > 0) {
		msg = cudaGetErrorString((cudaError_t)code);
	} else {
		snprintf(tmp, sizeof tmp, "unknown error %d", code);
		msg = tmp;
	}
	snprintf(buf, n, "%s", msg);
}

extern "C" int tandem_cuda_device_count(int *n) {
	if (n == nullptr) return TC_ERR_ARG;
	*n = 0;
	cudaError_t err = cudaGetDeviceCount(n);
	if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
		*n = 0;
		return TC_OK;
	}
	return (int)err;
}

extern "C" int tandem_cuda_device_info(int device, tc_device_info *out) {
	if (out == nullptr) return TC_ERR_ARG;
	memset(out, 0, sizeof *out);
	cudaDeviceProp p;
	TC_CHECK(cudaGetDeviceProperties(&p, device));
	snprintf(out->name, sizeof out->name, "%s", p.name);
	out->total_memory = (uint64_t)p.totalGlobalMem;
	out->cc_major = p.major;
	out->cc_minor = p.minor;
	out->multiprocessors = p.multiProcessorCount;
	out->memory_bus_bits = p.memoryBusWidth;
	int clk = 0;
	// The memory clock attribute is optional in newer runtimes; peak
	// bandwidth is then looked up from the device name by the caller.
	if (cudaDeviceGetAttribute(&clk, cudaDevAttrMemoryClockRate, device) == cudaSuccess) {
		out->memory_clock_khz = clk;
	} else {
		(void)cudaGetLastError();
	}
	TC_CHECK(cudaDriverGetVersion(&out->driver_version));
	TC_CHECK(cudaRuntimeGetVersion(&out->runtime_version));
	return TC_OK;
}

extern "C" int tandem_cuda_create(int device, tc_ctx **out) {
	if (out == nullptr) return TC_ERR_ARG;
	*out = nullptr;
	TC_CHECK(cudaSetDevice(device));
	tc_ctx *c = new (std::nothrow) tc_ctx();
	if (c == nullptr) return (int)cudaErrorMemoryAllocation;
	c->device = device;
	cudaError_t err = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
	if (err != cudaSuccess) {
		delete c;
		return (int)err;
	}
	*out = c;
	return TC_OK;
}

extern "C" int tandem_cuda_destroy(tc_ctx *c) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	cudaError_t err = cudaStreamSynchronize(c->stream);
	for (void *p : {c->scratch, c->attn}) {
		if (p == nullptr) continue;
		cudaError_t e2 = cudaFree(p);
		if (err == cudaSuccess) err = e2;
	}
	cudaError_t e3 = cudaStreamDestroy(c->stream);
	if (err == cudaSuccess) err = e3;
	delete c;
	return (int)err;
}

extern "C" int tandem_cuda_sync(tc_ctx *c) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	TC_CHECK(cudaStreamSynchronize(c->stream));
	return TC_OK;
}

int tc_scratch(tc_ctx *c, size_t bytes, void **out) {
	if (bytes > c->scratch_bytes) {
		size_t want = bytes < (1u << 20) ? (1u << 20) : bytes;
		want += want / 2;
		if (c->scratch != nullptr) {
			TC_CHECK(cudaStreamSynchronize(c->stream));
			TC_CHECK(cudaFree(c->scratch));
			c->scratch = nullptr;
			c->scratch_bytes = 0;
		}
		TC_CHECK(cudaMalloc(&c->scratch, want));
		c->scratch_bytes = want;
	}
	*out = c->scratch;
	return TC_OK;
}

int tc_stage(tc_ctx *c, size_t off, const void *h, size_t bytes, void **out) {
	void *base;
	int rc = tc_scratch(c, off + bytes, &base);
	if (rc != TC_OK) return rc;
	char *d = (char *)base + off;
	// Pageable host memory: the copy is staged before the call returns, so
	// the caller may reuse h at once, and it is ordered before later kernels.
	TC_CHECK(cudaMemcpyAsync(d, h, bytes, cudaMemcpyHostToDevice, c->stream));
	*out = d;
	return TC_OK;
}

extern "C" int tandem_cuda_malloc(tc_ctx *c, size_t bytes, void **d_out) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (d_out == nullptr) return TC_ERR_ARG;
	*d_out = nullptr;
	if (bytes == 0) bytes = 16;
	TC_CHECK(cudaMalloc(d_out, bytes));
	// Zeroed before returning: the memory may next be used from another
	// context's stream (KV block I/O), which would not wait for this one.
	TC_CHECK(cudaMemsetAsync(*d_out, 0, bytes, c->stream));
	TC_CHECK(cudaStreamSynchronize(c->stream));
	return TC_OK;
}

extern "C" int tandem_cuda_free(tc_ctx *c, void *d) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	TC_CHECK(cudaStreamSynchronize(c->stream));
	TC_CHECK(cudaFree(d));
	return TC_OK;
}

extern "C" int tandem_cuda_upload(tc_ctx *c, void *d_dst, const void *h_src, size_t bytes) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	TC_CHECK(cudaMemcpyAsync(d_dst, h_src, bytes, cudaMemcpyHostToDevice, c->stream));
	TC_CHECK(cudaStreamSynchronize(c->stream));
	return TC_OK;
}

extern "C" int tandem_cuda_download(tc_ctx *c, void *h_dst, const void *d_src, size_t bytes) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	TC_CHECK(cudaMemcpyAsync(h_dst, d_src, bytes, cudaMemcpyDeviceToHost, c->stream));
	TC_CHECK(cudaStreamSynchronize(c->stream));
	return TC_OK;
}

extern "C" int tandem_cuda_memset(tc_ctx *c, void *d, size_t bytes) {
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	TC_CHECK(cudaMemsetAsync(d, 0, bytes, c->stream));
	return TC_OK;
}
