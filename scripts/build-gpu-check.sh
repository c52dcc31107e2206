#!/usr/bin/env bash
# Prepares what scripts/gpu-check.sh runs on a GPU host that has no Go
# toolchain: the GPU test binaries of kernels/cuda, kernels/comm and
# kernels/nvml in .cache/gpucheck/ (git-ignored; carry it to the GPU host
# with the working tree), and a prebuilt kernel library for hosts without
# nvcc. About 33 MB in all, inside what a device run may carry.
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

for pkg in cuda comm nvml; do
	go test -c -o "$out/$pkg.test" "./kernels/$pkg"
done
# A library built here is a fallback for GPU hosts without nvcc.
if scripts/build-cuda.sh >/dev/null 2>&1; then
	cp kernels/cuda/build/libtandem_cuda.so "$out/"
fi
ls -la "$out"
echo "build-gpu-check: carry .cache/gpucheck to the GPU host, then run scripts/gpu-check.sh"
