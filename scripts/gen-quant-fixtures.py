#!/usr/bin/env python3
"""Write the kernels/quant reference fixtures into testdata/quant/.

For every format gguf-py can quantize, NAME.in.f32 holds the input values,
NAME.q the bytes gguf.quants.quantize produced and NAME.out.f32 what
gguf.quants.dequantize decodes them to. For the K-quants, which gguf-py can
only decode, NAME.q holds random blocks (with finite f16 scales) and
NAME.out.f32 their decoding. All files are raw little-endian arrays.

Usage: python3 scripts/gen-quant-fixtures.py [OUTDIR]   (needs `pip install gguf numpy`)
"""
import os
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

N = 512  # values per fixture: two K-quant superblocks, sixteen legacy blocks


def inputs(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(N).astype(np.float32)
    x[:64] *= np.float32(0.01)  # small block scales
    x[64:128] *= np.float32(300.0)  # large ones
    x[128:160] = 0.0  # all-zero block
    x[160:192] = np.float32(1.5)  # constant block
    x[192:224] += np.float32(4.0)  # positive offset: exercises mins
    # Values that stress half-float rounding: subnormals, ties, overflow.
    x[224:232] = np.array([6e-8, -3e-6, 1e-9, 65519.0, 65520.0, -7e4,
                           1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11], dtype=np.float32)
    return x


def random_blocks(rng: np.random.Generator, qtype: T, nblocks: int) -> np.ndarray:
    from gguf.constants import GGML_QUANT_SIZES
    _, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    halves = rng.uniform(-0.05, 0.05, size=(nblocks, 2)).astype(np.float16).view(np.uint8)
    if qtype == T.Q6_K:
        raw[:, 208:210] = halves[:, 0:2]  # d is the last field
    else:
        raw[:, 0:4] = halves  # d and dmin lead the block
    return raw


def main() -> None:
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "testdata", "quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20240611)
    x = inputs(rng)
    for qtype in (T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0):
        name = qtype.name.lower()
        # The -7e4 input overflows f16 on purpose (Q4_1/Q5_1 mins become -inf).
        with np.errstate(over="ignore"):
            q = np.ascontiguousarray(quantize(x.reshape(1, N), qtype)).view(np.uint8)
        y = dequantize(q, qtype).astype(np.float32)
        x.tofile(os.path.join(out, name + ".in.f32"))
        q.tofile(os.path.join(out, name + ".q"))
        y.tofile(os.path.join(out, name + ".out.f32"))
    for qtype in (T.Q4_K, T.Q5_K, T.Q6_K):
        name = qtype.name.lower()
        q = random_blocks(rng, qtype, N // 256)
        y = dequantize(q.reshape(1, -1), qtype).astype(np.float32)
        q.tofile(os.path.join(out, name + ".q"))
        y.tofile(os.path.join(out, name + ".out.f32"))


if __name__ == "__main__":
    main()
