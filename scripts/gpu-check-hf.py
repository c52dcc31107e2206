#!/usr/bin/env python3
"""Hugging Face transformers baseline for scripts/gpu-check.sh.

Builds LlamaForCausalLM from a config (random weights, no download) in
float16 on the GPU for the shapes Tandem benchmarks, and times the same
workloads as kernels/cuda's BenchmarkModel: decode steps for batch 1 and 32
(128 tokens of context each, KV cache reused) and prefill of 1x512 and
32x128 tokens. Prints one Go-benchmark-style line per figure so the report
step can put both side by side.
"""
import argparse
import sys
import time


def shapes():
    return {
        "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                             num_attention_heads=9, num_key_value_heads=3, vocab_size=49152,
                             rope_theta=100000.0, tie_word_embeddings=True),
        "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                          num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                          rope_theta=500000.0, tie_word_embeddings=False),
    }


def timed(torch, fn, iters):
    fn()  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / iters


def bench(torch, transformers, name, kw, iters):
    cfg = transformers.LlamaConfig(max_position_embeddings=8192, rms_norm_eps=1e-5,
                                   attn_implementation="sdpa", **kw)
    torch.manual_seed(0)
    # Build directly on the GPU in float16: an 8B model in float32 on the
    # CPU would take minutes to initialise.
    torch.set_default_dtype(torch.float16)
    with torch.device("cuda"):
        model = transformers.LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
    vocab = kw["vocab_size"]
    out = []
    with torch.inference_mode():
        for batch in (1, 32):
            ids = torch.randint(0, vocab, (batch, 128), device="cuda")
            past = model(ids, use_cache=True).past_key_values
            pos = [128]
            nxt = torch.randint(0, vocab, (batch, 1), device="cuda")

            def step():
                nonlocal past
                # One decode step: logits for the new token, cache grows.
                r = model(nxt, past_key_values=past, use_cache=True)
                past = r.past_key_values
                r.logits[:, -1].float().cpu()
                pos[0] += 1

            dt = timed(torch, step, iters)
            out.append((f"{name}/F16/decode/batch{batch}", batch / dt, dt * 1e3, "ms/step"))
        for batch, n in ((1, 512), (32, 128)):
            ids = torch.randint(0, vocab, (batch, n), device="cuda")

            def pre():
                model(ids, use_cache=True).logits[:, -1].float().cpu()

            dt = timed(torch, pre, max(2, iters // 4))
            out.append((f"{name}/F16/prefill/batch{batch}", batch * n / dt, dt * 1e3, "ms/iter"))
    del model
    torch.cuda.empty_cache()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--models", default="smollm2-135m,llama3-8b")
    args = ap.parse_args()
    try:
        import torch
        import transformers
    except ImportError as e:
        print(f"gpu-check-hf: skipped: {e}", file=sys.stderr)
        return 0
    if not torch.cuda.is_available():
        print("gpu-check-hf: skipped: torch sees no GPU", file=sys.stderr)
        return 0
    print(f"# torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
    for name in args.models.split(","):
        for label, tps, ms, unit in bench(torch, transformers, name, shapes()[name], args.iters):
            print(f"BenchmarkHF/{label} 1 {tps:.1f} tok/s {ms:.3f} {unit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
