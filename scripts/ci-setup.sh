#!/usr/bin/env bash
# Prepare a CI machine for `make test`. Idempotent: safe to run on every build.
#
# It installs only what the tests need: the default model, fetched (or
# verified and left alone) by scripts/fetch-model.sh, and a CUDA compiler
# from PyPI for the kernel build check. It then prints the versions of the tools the build uses, so a CI log shows
# what ran.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-model.sh
# A CUDA compiler from PyPI, so `make test` compiles the kernels and CI
# catches a kernel that no longer builds. No GPU is needed; where PyPI is out
# of reach the tests still run and the kernel build is skipped.
scripts/install-cuda-pypi.sh || echo "ci-setup: CUDA compiler not installed; the kernel build will be skipped"

echo "ci-setup: tool versions"
go version
python3 --version 2>&1 || echo "python3: not installed (needed only to regenerate fixtures)"
if command -v protoc >/dev/null; then
	protoc --version
else
	echo "protoc: not installed (needed only for make proto)"
fi
pypi_nvcc="${TANDEM_CUDA_PYPI:-$HOME/.cache/tandem/cuda-pypi}/nvidia/cu13/bin/nvcc"
if command -v nvcc >/dev/null; then
	nvcc --version | tail -n 1
elif [[ -x "$pypi_nvcc" ]]; then
	echo "nvcc (PyPI): $("$pypi_nvcc" --version | tail -n 1)"
else
	echo "nvcc: not installed (the CUDA kernel build is skipped)"
fi
echo "ci-setup: model at ${TANDEM_MODEL_DIR:-$HOME/.cache/tandem/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
