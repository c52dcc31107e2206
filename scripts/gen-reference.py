#!/usr/bin/env python3
"""Reference logits and greedy continuations for the model tests.

Runs an independent implementation on a GGUF file and writes, for a set
of plain and chat prompts: the prompt token ids, the top-1 token and the 16
largest logits at every prompt position, the full logit vector at the last
position (float32 little-endian, one .bin per prompt), and a 48-token greedy
continuation. Chat prompts are rendered from the file's own
tokenizer.chat_template with jinja2, so the fixture also checks Tandem's
template rendering.

    python3 scripts/gen-reference.py --engine hf MODEL.gguf testdata/reference/smollm2-hf
    python3 scripts/gen-reference.py --engine llama.cpp MODEL.gguf testdata/reference/smollm2-llamacpp

Engines: "hf" is Hugging Face transformers, which dequantizes the GGUF
weights and computes in float32 (the reference for Tandem's default f32
activations); "llama.cpp" is llama-cpp-python, which rounds activations to
8 bits (the reference for --activations q8).

needs: pip install gguf jinja2 numpy, and transformers torch accelerate (hf)
or llama-cpp-python (llama.cpp)
"""
import argparse
import json
import os
import sys

import gguf
import jinja2
import numpy as np

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


class LlamaCpp:
    name = "llama-cpp-python"

    def __init__(self, path):
        from llama_cpp import Llama
        self.llm = Llama(model_path=path, n_ctx=512, n_batch=512, n_threads=2,
                         logits_all=True, verbose=False, seed=0)

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def logits(self, ids):
        self.llm.reset()
        self.llm.eval(ids)
        return np.array(self.llm.scores[: len(ids)], dtype=np.float32)

    def greedy(self, ids, first, n):
        # The cache holds ids after logits(); feed each choice back.
        gen, nxt = [], first
        for _ in range(n):
            gen.append(nxt)
            self.llm.eval([nxt])
            nxt = int(np.argmax(np.array(self.llm.scores[self.llm.n_tokens - 1], dtype=np.float32)))
        return gen

    def detokenize(self, ids):
        return self.llm.detokenize(ids).decode("utf-8", "replace")


class HF:
    name = "transformers"

    def __init__(self, path):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        self.torch = torch
        d, f = os.path.dirname(path), os.path.basename(path)
        self.tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        self.model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        self.model.eval()

    def tokenize(self, text):
        return self.tok(text, add_special_tokens=False).input_ids

    def logits(self, ids):
        with self.torch.no_grad():
            return self.model(self.torch.tensor([ids])).logits[0].float().numpy()

    def greedy(self, ids, first, n):
        gen = [first]
        with self.torch.no_grad():
            while len(gen) < n:
                out = self.model(self.torch.tensor([ids + gen])).logits[0, -1]
                gen.append(int(self.torch.argmax(out)))
        return gen

    def detokenize(self, ids):
        return self.tok.decode(ids)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=["hf", "llama.cpp"], default="hf")
    ap.add_argument("model")
    ap.add_argument("out")
    a = ap.parse_args()
    model, out = a.model, a.out
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    eng = HF(model) if a.engine == "hf" else LlamaCpp(model)
    tmpl = jinja2.Environment().from_string(chat_template(model))
    cases = [{"name": f"plain{i}", "text": t} for i, t in enumerate(PLAIN)]
    for i, msgs in enumerate(CHAT):
        text = tmpl.render(messages=msgs, add_generation_prompt=True)
        cases.append({"name": f"chat{i}", "text": text, "messages": msgs})

    fixture = {"topn": TOPN, "continuation": CONTINUATION, "generator": eng.name, "cases": []}
    for case in cases:
        ids = list(eng.tokenize(case["text"]))
        logits = eng.logits(ids)
        positions = []
        for row in logits:
            top = np.argsort(-row, kind="stable")[:TOPN]
            positions.append({"top1": int(top[0]),
                              "ids": [int(t) for t in top],
                              "logits": [float(row[t]) for t in top]})
        base = f"{os.path.basename(out)}_{case['name']}.bin"
        logits[-1].astype("<f4").tofile(os.path.join(os.path.dirname(out), base))
        gen = eng.greedy(ids, int(np.argmax(logits[-1])), CONTINUATION)
        case.update({"ids": ids, "positions": positions, "last_logits_file": base,
                     "greedy": gen, "greedy_text": eng.detokenize(gen)})
        fixture["cases"].append(case)
        print(case["name"], len(ids), "tokens ->", repr(case["greedy_text"][:60]), flush=True)
    with open(out + ".json", "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)


if __name__ == "__main__":
    main()
