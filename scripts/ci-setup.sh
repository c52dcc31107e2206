#!/usr/bin/env bash
# Prepare a CI machine for `make test`. Idempotent: safe to run on every build.
#
# It installs nothing the tests do not need: today that is only the default
# model, fetched (or verified and left alone) by scripts/fetch-model.sh. It
# then prints the versions of the tools the build uses, so a CI log shows
# what ran.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/fetch-model.sh

echo "ci-setup: tool versions"
go version
python3 --version 2>&1 || echo "python3: not installed (needed only to regenerate fixtures)"
if command -v protoc >/dev/null; then
	protoc --version
else
	echo "protoc: not installed (needed only for make proto)"
fi
if command -v nvcc >/dev/null; then
	nvcc --version | tail -n 1
else
	echo "nvcc: not installed (CUDA kernels are skipped)"
fi
echo "ci-setup: model at ${TANDEM_MODEL_DIR:-$HOME/.cache/tandem/models}/SmolLM2-135M-Instruct.Q4_1.gguf"
