#!/usr/bin/env bash
# GPU device check: builds the CUDA kernels with the host's nvcc, runs every
# GPU test (each weight format, the K-quants Q4_K/Q5_K/Q6_K and Q5_0/Q5_1
# included, against the pure-Go reference, batch invariance, whole
# random-weight models, a 576-wide Q4_K_M mix of Q5_0, Q8_0, Q4_K and Q6_K),
# benchmarks the matrix-vector kernels (Q4_1, Q4_0, Q5_0, Q5_1, Q8_0, Q4_K,
# Q6_K, F16, BF16) and whole random-weight models (SmolLM2-135M and
# Llama-3-8B shapes, Q4_1 and F16, batch 1 and 32; Llama-3-8B in Q4_K and
# SmolLM2 in Q5_0, decode only), runs a
# Hugging Face transformers baseline on the same shapes, and prints a table of
# figures. Finishes within 8 minutes on an H100/H200.
#
# Needs on the GPU host: the NVIDIA driver, nvcc (CUDA >= 12) or a prebuilt
# library, python3 with torch and transformers for the baseline, and the
# binaries from scripts/build-gpu-check.sh in .cache/gpucheck/ (no Go
# toolchain and no network are needed).
#
#   scripts/gpu-check.sh                 # results in $OUT or .cache/gpucheck/out
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bin="${GPUCHECK_BIN:-$root/.cache/gpucheck}"
out="${OUT:-$bin/out}"
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
t0=$(date +%s)
section() { printf '\n== %s (%ds)\n' "$*" "$(($(date +%s) - t0))"; }
# Every step's timeout is capped by what is left of the 8-minute budget
# (470 s, keeping a margin for the report).
budget() {
	local left=$((470 - ($(date +%s) - t0)))
	((left < 5)) && left=5
	echo $(($1 < left ? $1 : left))
}
failed=()

section "host"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.memory --format=csv,noheader || echo "nvidia-smi not found"
touch "$bin/extra.txt" 2>/dev/null || true
for t in cuda comm nvml; do
	[[ -x "$bin/$t.test" ]] || { echo "gpu-check: $bin/$t.test missing: run scripts/build-gpu-check.sh where Go is installed"; exit 2; }
done

section "build kernels"
lib="$root/kernels/cuda/build/libtandem_cuda.so"
if timeout "$(budget 200)" scripts/build-cuda.sh; then
	:
elif TANDEM_CUDA_WERROR=0 timeout "$(budget 200)" scripts/build-cuda.sh; then
	echo "gpu-check: built without -Werror (the host compiler warned; see above)"
	failed+=("build:warnings")
elif [[ -f "$bin/libtandem_cuda.so" ]]; then
	# Built with CUDA 13.0: needs a driver of the r580 line or newer.
	echo "gpu-check: host build failed or no nvcc; using the prebuilt library"
	lib="$bin/libtandem_cuda.so"
else
	echo "gpu-check: no kernel library"
	exit 1
fi
export TANDEM_CUDA_LIB="$lib" TANDEM_CUDA_TESTS=1
# NCCL from the PyTorch wheels when the system has none.
nccl_dir="$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null || true)"
[[ -n "$nccl_dir" ]] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$nccl_dir"

section "tests"
: >"$out/tests.txt"
run_tests() {
	local dir=$1 exe=$2
	shift 2
	echo "### $dir" >>"$out/tests.txt"
	if ! (cd "$dir" && timeout "$(budget 120)" "$exe" -test.count=1 -test.v "$@") >>"$out/tests.txt" 2>&1; then
		failed+=("tests:$dir")
	fi
}
run_tests kernels/cuda "$bin/cuda.test" -test.run 'GPU|NewDefault|Devices|Library'
run_tests kernels/comm "$bin/comm.test" -test.run 'TensorParallel|NCCL'
run_tests kernels/nvml "$bin/nvml.test" -test.run 'OpenRealLibrary|Inventory|Metrics'
while read -r exe dir; do
	[[ -n "$exe" ]] && run_tests "$dir" "$bin/$exe" -test.run 'GPU|CUDA|Cuda'
done <"$bin/extra.txt"
grep -E '^(###|--- |ok|FAIL|PASS|panic)|_test.go' "$out/tests.txt"

section "matrix-vector benchmarks"
(cd kernels/cuda && timeout "$(budget 150)" "$bin/cuda.test" -test.run '^$' -test.bench 'MatVec' -test.benchtime 200x) >"$out/bench.txt" 2>&1 || failed+=("bench:matvec")
grep -E '^Benchmark|FAIL|panic' "$out/bench.txt"

section "model benchmarks"
(cd kernels/cuda && timeout "$(budget 180)" "$bin/cuda.test" -test.run '^$' -test.bench 'Model' -test.benchtime 5x) >"$out/bench-model.txt" 2>&1 || failed+=("bench:model")
grep -E '^Benchmark|FAIL|panic' "$out/bench-model.txt"

section "transformers baseline"
timeout "$(budget 150)" python3 scripts/gpu-check-hf.py --iters 10 >"$out/bench-hf.txt" 2>&1 || failed+=("baseline")
cat "$out/bench-hf.txt"

section "figures"
python3 - "$out/bench.txt" "$out/bench-model.txt" "$out/bench-hf.txt" <<'PY' | tee "$out/figures.txt"
import re, sys
rows = {}
lines = [l for p in sys.argv[1:] for l in open(p)]
for line in lines:
    f = line.split()
    if not f or not f[0].startswith("Benchmark"):
        continue
    name = re.sub(r"-\d+$", "", f[0])
    rows[name] = {f[i + 1]: float(f[i]) for i in range(2, len(f) - 1, 2)}
print("matrix-vector kernels (weights streamed once per call)")
print(f"{'kernel':<44}{'GB/s':>9}{'%peak':>8}{'us':>9}")
for k, v in rows.items():
    if k.startswith("BenchmarkMatVec/"):
        print(f"{k[16:]:<44}{v.get('GB/s', 0):>9.0f}{v.get('%peak', 0):>8.1f}{v.get('us/op', 0):>9.1f}")
print()
print("whole models, random weights (tok/s; HF = transformers float16, same shapes)")
print(f"{'model/type/workload':<40}{'tandem':>10}{'ms':>9}{'HF F16':>10}{'HF ms':>9}")
for k, v in rows.items():
    if not k.startswith("BenchmarkModel/"):
        continue
    key = k[15:]
    parts = key.split("/")
    hf = rows.get("BenchmarkHF/" + "/".join([parts[0], "F16"] + parts[2:]), {})
    ms = v.get("ms/step", v.get("ms/iter", 0))
    hms = hf.get("ms/step", hf.get("ms/iter", 0))
    print(f"{key:<40}{v.get('tok/s', 0):>10.0f}{ms:>9.2f}{hf.get('tok/s', 0):>10.0f}{hms:>9.2f}")
PY

section "done"
if ((${#failed[@]})); then
	echo "gpu-check: FAILED: ${failed[*]}"
	exit 1
fi
echo "gpu-check: all passed"
