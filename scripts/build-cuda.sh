#!/usr/bin/env bash
# Compiles the CUDA kernels (kernels/cuda/csrc) into
# kernels/cuda/build/libtandem_cuda.so for sm_80 and sm_90, plus compute_90
# PTX so newer GPUs can JIT it. The CUDA runtime is linked statically, so the
# library needs only the NVIDIA driver (libcuda.so.1) at run time; NCCL is
# dlopened on first use.
#
# nvcc is taken from $NVCC, then PATH, then /usr/local/cuda/bin, then the
# PyPI install of scripts/install-cuda-pypi.sh ($TANDEM_CUDA_PYPI).
#
#   scripts/build-cuda.sh            # build
#   TANDEM_CUDA_WERROR=0 scripts/build-cuda.sh
#   TANDEM_CUDA_LIB_OUT=/tmp/lib.so scripts/build-cuda.sh
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/kernels/cuda/csrc"
out="${TANDEM_CUDA_LIB_OUT:-$root/kernels/cuda/build/libtandem_cuda.so}"
pypi="${TANDEM_CUDA_PYPI:-$HOME/.cache/tandem/cuda-pypi}"

find_nvcc() {
	if [[ -n "${NVCC:-}" ]]; then
		echo "$NVCC"
		return
	fi
	local c
	for c in "$(command -v nvcc || true)" /usr/local/cuda/bin/nvcc \
		"$pypi/nvidia/cu13/bin/nvcc" "$pypi/nvidia/cuda_nvcc/bin/nvcc"; do
		if [[ -n "$c" && -x "$c" ]]; then
			echo "$c"
			return
		fi
	done
}

nvcc="$(find_nvcc)"
if [[ -z "$nvcc" ]]; then
	echo "build-cuda: nvcc not found (set NVCC, install the CUDA toolkit, or run scripts/install-cuda-pypi.sh)" >&2
	exit 1
fi
# A PyPI toolkit keeps its libraries in lib/, not the lib64/ nvcc.profile names.
libdir="$(cd "$(dirname "$nvcc")/.." && pwd)/lib"
extra=()
[[ -d "$libdir" ]] && extra+=("-L$libdir")

mkdir -p "$(dirname "$out")"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# Warnings are errors by default so CI catches them; TANDEM_CUDA_WERROR=0
# relaxes that for a host whose compiler warns inside its own CUDA headers.
werror=(-Xcompiler -fPIC,-Wall,-Wextra,-Werror --Werror all-warnings)
if [[ "${TANDEM_CUDA_WERROR:-1}" == 0 ]]; then
	werror=(-Xcompiler -fPIC)
fi
flags=(
	-std=c++17 -O3 "${werror[@]}"
	-gencode arch=compute_80,code=sm_80
	-gencode arch=compute_90,code=sm_90
	-gencode arch=compute_90,code=compute_90
	-I"$src"
	# The C ABI header lives beside the Go package that includes it, so the
	# Go build cache sees changes to it.
	-I"$src/.."
)
# Compile units in parallel (they are independent), then link once.
pids=()
objs=()
for f in "$src"/*.cu; do
	o="$tmp/$(basename "${f%.cu}").o"
	objs+=("$o")
	"$nvcc" "${flags[@]}" -c "$f" -o "$o" &
	pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
if [[ $rc -ne 0 ]]; then
	echo "build-cuda: compilation failed" >&2
	exit 1
fi
"$nvcc" -shared -cudart static "${extra[@]}" -o "$out.tmp" "${objs[@]}" -ldl
mv "$out.tmp" "$out"
echo "build-cuda: wrote $out ($("$nvcc" --version | tail -n 1))"
