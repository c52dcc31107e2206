#!/usr/bin/env python3
"""llama.cpp baseline for `tandem bench engine`: the same GGUF file, the same
thread count, a 512-token prompt and 128 decoded tokens at batch 1.

    python3 scripts/bench-llamacpp.py MODEL.gguf [--threads N] [--runs R]

Prints one JSON object with prefill_tokens_per_s and decode_tokens_per_s
(medians over the runs). Needs: pip install llama-cpp-python
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama

TEXT = ("The history of computing is a story of layers: each generation of engineers builds abstractions "
        "on the work of the previous one, and the machines underneath grow faster while the ideas on top grow richer. ")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-tokens", type=int, default=512)
    ap.add_argument("--decode-tokens", type=int, default=128)
    a = ap.parse_args()
    llm = Llama(model_path=a.model, n_ctx=1024, n_batch=512, n_ubatch=512, n_threads=a.threads,
                n_threads_batch=a.threads, verbose=False)
    base = llm.tokenize(TEXT.encode(), add_bos=False)
    prompt = (base * (a.prompt_tokens // len(base) + 1))[: a.prompt_tokens]
    prefill, decode = [], []
    for _ in range(a.runs):
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        prefill.append(len(prompt) / (time.perf_counter() - t0))
        llm.reset()
        llm.eval(prompt[:16])
        tok = prompt[16]
        t0 = time.perf_counter()
        for _ in range(a.decode_tokens):
            llm.eval([tok])
        decode.append(a.decode_tokens / (time.perf_counter() - t0))
    print(json.dumps({"engine": "llama.cpp (llama-cpp-python)", "threads": a.threads,
                      "prompt_tokens": a.prompt_tokens, "decode_tokens": a.decode_tokens,
                      "prefill_tokens_per_s": statistics.median(prefill),
                      "decode_tokens_per_s": statistics.median(decode),
                      "prefill_runs_tokens_per_s": prefill, "decode_runs_tokens_per_s": decode}, indent=2))


if __name__ == "__main__":
    main()
