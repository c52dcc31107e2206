#!/usr/bin/env bash
# Installs a CUDA compiler (nvcc, cicc, ptxas), the runtime and CCCL headers,
# the static runtime and NCCL from PyPI into a cache directory, so CPU-only
# machines (CI, laptops) can compile the kernels. Nothing is installed
# system-wide and no GPU or driver is needed.
#
#   scripts/install-cuda-pypi.sh
#   TANDEM_CUDA_PYPI=/opt/x scripts/install-cuda-pypi.sh
#
# Why the CUDA 13 wheels: the nvidia-cuda-nvcc-cu12 wheels (12.0 to 12.9)
# carry only ptxas, not the nvcc driver or cicc; the CUDA 13 split wheels
# (nvidia-cuda-nvcc, nvidia-nvvm, nvidia-cuda-crt) carry a complete compiler.
# CUDA 13 still targets sm_80 and sm_90, the architectures Tandem builds for;
# GPU hosts build with their own toolkit (scripts/gpu-check.sh).
#
# scripts/build-cuda.sh looks for nvcc in the same directory.
set -euo pipefail

dest="${TANDEM_CUDA_PYPI:-$HOME/.cache/tandem/cuda-pypi}"
python="${PYTHON:-python3}"
nvcc="$dest/nvidia/cu13/bin/nvcc"

if [[ -x "$nvcc" ]]; then
	echo "install-cuda-pypi: nvcc already present in $dest"
	exit 0
fi
# One pip call for every wheel: the wheels share the nvidia/cu13 tree, and a
# second `pip install --target` into an existing tree skips what exists.
rm -rf "$dest"
mkdir -p "$dest"
"$python" -m pip install --quiet --disable-pip-version-check --no-deps \
	--target "$dest" \
	"nvidia-cuda-nvcc==13.0.88" \
	"nvidia-nvvm==13.0.88" \
	"nvidia-cuda-crt==13.0.88" \
	"nvidia-cuda-runtime==13.0.96" \
	"nvidia-cuda-cccl==13.0.85" \
	"nvidia-nccl-cu13"
"$nvcc" --version | tail -n 2
echo "install-cuda-pypi: installed into $dest"
