// nccl.cu: NCCL all-reduce, with libnccl.so.2 loaded at run time.
//
// The few NCCL declarations used are restated here (they are part of NCCL's
// stable ABI) so the library builds without NCCL headers and loads on hosts
// without NCCL; only the collective entry points fail there.
#include <dlfcn.h>
#include <mutex>

#include "common.cuh"

namespace {

typedef struct {
	char internal[128];
} nccl_unique_id;
typedef void *nccl_comm;
typedef int nccl_result;
const int nccl_float32 = 7; // ncclFloat32
const int nccl_sum = 0;     // ncclSum

struct nccl_api {
	bool ok;
	nccl_result (*comm_init_all)(nccl_comm *, int, const int *);
	nccl_result (*all_reduce)(const void *, void *, size_t, int, int, nccl_comm, cudaStream_t);
	nccl_result (*comm_destroy)(nccl_comm);
};

// The resolved table is immutable once loaded; std::call_once makes the one
// load thread-safe.
nccl_api *load_nccl() {
	static nccl_api api;
	static std::once_flag once;
	std::call_once(once, [] {
		void *h = dlopen("libnccl.so.2", RTLD_NOW | RTLD_LOCAL);
		if (h == nullptr) h = dlopen("libnccl.so", RTLD_NOW | RTLD_LOCAL);
		if (h == nullptr) return;
		api.comm_init_all = (nccl_result(*)(nccl_comm *, int, const int *))dlsym(h, "ncclCommInitAll");
		api.all_reduce = (nccl_result(*)(const void *, void *, size_t, int, int, nccl_comm, cudaStream_t))dlsym(
		    h, "ncclAllReduce");
		api.comm_destroy = (nccl_result(*)(nccl_comm))dlsym(h, "ncclCommDestroy");
		api.ok = api.comm_init_all && api.all_reduce && api.comm_destroy;
	});
	return api.ok ? &api : nullptr;
}

int nccl_code(nccl_result r) { return r == 0 ? TC_OK : TC_ERR_NCCL_BASE - r; }

} // namespace

extern "C" int tandem_nccl_available(void) { return load_nccl() != nullptr; }

extern "C" int tandem_nccl_init_all(tc_ctx **ctxs, int n, void **comms_out) {
	nccl_api *api = load_nccl();
	if (api == nullptr) return TC_ERR_NO_NCCL;
	if (ctxs == nullptr || comms_out == nullptr || n <= 0 || n > 64) return TC_ERR_ARG;
	int devs[64];
	for (int i = 0; i < n; i++) {
		if (ctxs[i] == nullptr) return TC_ERR_ARG;
		devs[i] = ctxs[i]->device;
	}
	return nccl_code(api->comm_init_all((nccl_comm *)comms_out, n, devs));
}

extern "C" int tandem_nccl_all_reduce_sum(tc_ctx *c, void *comm, float *d_buf, size_t n) {
	nccl_api *api = load_nccl();
	if (api == nullptr) return TC_ERR_NO_NCCL;
	int rc = tc_enter(c);
	if (rc != TC_OK) return rc;
	if (comm == nullptr) return TC_ERR_ARG;
	return nccl_code(api->all_reduce(d_buf, d_buf, n, nccl_float32, nccl_sum, (nccl_comm)comm, c->stream));
}

extern "C" int tandem_nccl_destroy(void *comm) {
	nccl_api *api = load_nccl();
	if (api == nullptr) return TC_ERR_NO_NCCL;
	if (comm == nullptr) return TC_OK;
	return nccl_code(api->comm_destroy((nccl_comm)comm));
}
