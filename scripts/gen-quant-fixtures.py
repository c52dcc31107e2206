#!/usr/bin/env python3
"""Write the reference fixtures of kernels/quant and model/gguf.

testdata/quant/: for every format gguf-py can quantize, NAME.in.f32 holds the input values,
NAME.q the bytes gguf.quants.quantize produced and NAME.out.f32 what
gguf.quants.dequantize decodes them to. For the K-quants, which gguf-py can
only decode, NAME.q holds random blocks (with finite f16 scales) and
NAME.out.f32 their decoding. All files are raw little-endian arrays.

testdata/gguf/smollm2.json: what gguf-py's GGUFReader sees in the default
model (when $TANDEM_MODEL or the default cache path exists): counts, some
metadata, and for a few tensors their shape, type, leading dequantized values
and sums. testdata/gguf/writer.json: what GGUFReader reads back from
testdata/gguf/writer.gguf, a file written by model/gguf's Writer
(`go test ./model/gguf -run TestWriterGolden -update-golden` regenerates it).

Usage: python3 scripts/gen-quant-fixtures.py   (needs `pip install gguf numpy`)
"""
import hashlib
import json
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


ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DEFAULT_MODEL = os.path.expanduser("~/.cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
SAMPLE_TENSORS = ("token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_norm.weight",
                  "blk.29.ffn_down.weight", "output_norm.weight")
SAMPLE_KEYS = ("general.architecture", "llama.block_count", "llama.embedding_length",
               "llama.rope.freq_base", "tokenizer.ggml.pre", "tokenizer.ggml.model",
               "tokenizer.ggml.bos_token_id", "tokenizer.ggml.add_bos_token")


def field_value(field):
    """A metadata value as JSON: scalars as themselves, arrays as lists."""
    from gguf import GGUFValueType as V
    v = field.contents()
    if field.types and field.types[0] == V.FLOAT32 and not isinstance(v, list):
        return float(np.float32(v))
    return v


def model_sample(path: str) -> dict:
    from gguf import GGUFReader
    r = GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"]
    out = {
        "tensor_count": len(r.tensors),
        "kv_count": len([k for k in r.fields if not k.startswith("GGUF.")]),
        "metadata": {k: field_value(r.fields[k]) for k in SAMPLE_KEYS},
        "token_count": len(tokens.data),
        "tokens_head": [tokens.contents(i) for i in range(5)],
        "tensors": [],
    }
    by_name = {t.name: t for t in r.tensors}
    for name in SAMPLE_TENSORS:
        t = by_name[name]
        y = dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
        out["tensors"].append({
            "name": name,
            "dims": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "head": [float(v) for v in y[:8]],
            "row1_head": [float(v) for v in y[int(t.shape[0]):int(t.shape[0]) + 8]] if len(t.shape) > 1 else [],
            "sum": float(y.astype(np.float64).sum()),
            "sum_sq": float((y.astype(np.float64) ** 2).sum()),
        })
    return out


def writer_readback(path: str) -> dict:
    from gguf import GGUFReader
    r = GGUFReader(path)
    meta = {}
    for k, f in r.fields.items():
        if k.startswith("GGUF."):
            continue
        meta[k] = {"type": f.types[0].name, "value": field_value(f)}
        if f.types[0].name == "ARRAY" and len(f.types) > 1:
            # GGUFReader records no element type for an empty array.
            meta[k]["elem"] = f.types[1].name
    tensors = []
    for t in r.tensors:
        raw = np.ascontiguousarray(t.data).view(np.uint8).tobytes()
        tensors.append({
            "name": t.name,
            "dims": [int(d) for d in t.shape],
            "type": t.tensor_type.name,
            "offset": int(t.data_offset),
            "sha256": hashlib.sha256(raw).hexdigest(),
        })
    return {"metadata": meta, "tensors": tensors}


def write_json(path: str, obj: dict) -> None:
    with open(path, "w") as fh:
        json.dump(obj, fh, indent=1, ensure_ascii=False, allow_nan=False)
        fh.write("\n")


def main() -> None:
    out = os.path.join(ROOT, "testdata", "quant")
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

    gdir = os.path.join(ROOT, "testdata", "gguf")
    os.makedirs(gdir, exist_ok=True)
    model = os.environ.get("TANDEM_MODEL", DEFAULT_MODEL)
    if os.path.exists(model):
        write_json(os.path.join(gdir, "smollm2.json"), model_sample(model))
    else:
        print(f"{model} not found: skipping testdata/gguf/smollm2.json", file=sys.stderr)
    golden = os.path.join(gdir, "writer.gguf")
    if os.path.exists(golden):
        write_json(os.path.join(gdir, "writer.json"), writer_readback(golden))
    else:
        print(f"{golden} not found: skipping testdata/gguf/writer.json", file=sys.stderr)


if __name__ == "__main__":
    main()
