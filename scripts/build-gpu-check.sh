#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh runs on a GPU host that has no Go
# toolchain: the GPU test binaries of kernels/cuda, kernels/comm and
# kernels/nvml in .cache/gpucheck/ (git-ignored; carry it to the GPU host
# with the working tree), and a prebuilt kernel library for hosts without
# nvcc.
#
#   scripts/build-gpu-check.sh
#
# The binaries are linked against this host's glibc and need glibc >= 2.34 on
# the GPU host (Ubuntu 22.04, Debian 12 or newer).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/.cache/gpucheck"
cd "$root"
rm -rf "$out"
mkdir -p "$out"

# Stripped (-s -w): the binaries travel with the tree to the GPU host.
for pkg in cuda comm nvml; do
	go test -c -ldflags='-s -w' -o "$out/$pkg.test" "./kernels/$pkg"
done
# Every other package with GPU tests (gated by TANDEM_CUDA_TESTS) gets a
# binary too; gpu-check.sh runs their GPU tests from the package folder
# listed in the manifest.
: >"$out/extra.txt"
for dir in $(grep -rl --include='*_test.go' TANDEM_CUDA_TESTS . | xargs -r -n1 dirname | sort -u); do
	dir="${dir#./}"
	case "$dir" in kernels/cuda | kernels/comm | kernels/nvml) continue ;; esac
	name="$(echo "$dir" | tr / _).test"
	# Another package that does not build must not cost the kernel checks.
	if go test -c -ldflags='-s -w' -o "$out/$name" "./$dir"; then
		echo "$name $dir" >>"$out/extra.txt"
	else
		echo "build-gpu-check: skipping $dir: its tests do not build" >&2
	fi
done
# A library built here is a fallback for GPU hosts without nvcc.
if scripts/build-cuda.sh >/dev/null 2>&1; then
	cp kernels/cuda/build/libtandem_cuda.so "$out/"
fi
ls -la "$out"
echo "build-gpu-check: carry .cache/gpucheck to the GPU host, then run scripts/gpu-check.sh"
