#!/usr/bin/env python3
"""Reference logits and greedy continuations for the model tests.

Runs llama.cpp (through llama-cpp-python) on a GGUF file and writes, for a set
of plain and chat prompts: the prompt token ids, the top-1 token and the 16
largest logits at every prompt position, the full logit vector at the last
position (float32 little-endian, one .bin per prompt), and a 48-token greedy
continuation. Chat prompts are rendered from the file's own
tokenizer.chat_template with jinja2, so the fixture also checks Tandem's
template rendering.

    python3 scripts/gen-reference.py MODEL.gguf testdata/reference/smollm2

needs: pip install llama-cpp-python jinja2 gguf numpy
"""
import json
import os
import sys

import gguf
import jinja2
import numpy as np
from llama_cpp import Llama

PLAIN = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "Once upon a time, in a small village by the sea, there lived",
]
CHAT = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are a terse assistant."},
     {"role": "user", "content": "List three prime numbers."}],
    [{"role": "user", "content": "Hi!"},
     {"role": "assistant", "content": "Hello! How can I help you today?"},
     {"role": "user", "content": "Explain gravity in one sentence."}],
]
CONTINUATION = 48
TOPN = 16


def chat_template(path):
    r = gguf.GGUFReader(path)
    f = r.fields["tokenizer.chat_template"]
    return bytes(f.parts[f.data[0]]).decode("utf-8")


def main():
    model, out = sys.argv[1], sys.argv[2]
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    llm = Llama(model_path=model, n_ctx=512, n_batch=512, n_threads=2,
                logits_all=True, verbose=False, seed=0)
    tmpl = jinja2.Environment().from_string(chat_template(model))
    cases = [{"name": f"plain{i}", "text": t} for i, t in enumerate(PLAIN)]
    for i, msgs in enumerate(CHAT):
        text = tmpl.render(messages=msgs, add_generation_prompt=True)
        cases.append({"name": f"chat{i}", "text": text, "messages": msgs})

    fixture = {"model_sha256_prefix": None, "topn": TOPN, "continuation": CONTINUATION,
               "generator": "llama-cpp-python", "cases": []}
    for case in cases:
        ids = llm.tokenize(case["text"].encode("utf-8"), add_bos=False, special=True)
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        positions = []
        for row in logits:
            top = np.argsort(-row, kind="stable")[:TOPN]
            positions.append({"top1": int(top[0]),
                              "ids": [int(t) for t in top],
                              "logits": [float(row[t]) for t in top]})
        base = f"{os.path.basename(out)}_{case['name']}.bin"
        logits[-1].astype("<f4").tofile(os.path.join(os.path.dirname(out), base))
        # Greedy continuation: argmax, feed back, repeat.
        gen = []
        nxt = int(np.argmax(logits[-1]))
        for _ in range(CONTINUATION):
            gen.append(nxt)
            llm.eval([nxt])
            nxt = int(np.argmax(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)))
        case.update({"ids": ids, "positions": positions, "last_logits_file": base,
                     "greedy": gen, "greedy_text": llm.detokenize(gen).decode("utf-8", "replace")})
        fixture["cases"].append(case)
        print(case["name"], len(ids), "tokens ->", repr(case["greedy_text"][:60]))
    with open(out + ".json", "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
