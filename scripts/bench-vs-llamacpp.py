#!/usr/bin/env python3
"""Tandem's engine against llama.cpp on the same GGUF file and thread count.

Alternates `tandem bench engine` (each activation precision) with
scripts/bench-llamacpp.py for several rounds, so both see the same machine
conditions, and prints the medians and the ratios Tandem / llama.cpp.

    python3 scripts/bench-vs-llamacpp.py [--model M] [--rounds 3] [--threads 2] [--json]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    default_model = os.environ.get("TANDEM_MODEL") or os.path.join(
        os.environ.get("TANDEM_MODEL_DIR", os.path.expanduser("~/.cache/tandem/models")),
        "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=default_model)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=3, help="runs per round (each tool reports a median)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tandem", default=os.path.join(ROOT, "bin", "tandem"))
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    res = {"llama.cpp": {"prefill": [], "decode": []}, "tandem-f32": {"prefill": [], "decode": []},
           "tandem-q8": {"prefill": [], "decode": []}}
    for r in range(a.rounds):
        d = run_json([sys.executable, os.path.join(ROOT, "scripts", "bench-llamacpp.py"), a.model,
                      "--threads", str(a.threads), "--runs", str(a.runs)])
        res["llama.cpp"]["prefill"].append(d["prefill_tokens_per_s"])
        res["llama.cpp"]["decode"].append(d["decode_tokens_per_s"])
        for act in ("f32", "q8"):
            d = run_json([a.tandem, "bench", "engine", "--model", a.model, "--threads", str(a.threads),
                          "--runs", str(a.runs), "--concurrency", "", "--activations", act, "--json"])
            res["tandem-" + act]["prefill"].append(d["prefill_tokens_per_s"])
            res["tandem-" + act]["decode"].append(d["decode_tokens_per_s"])
        print(f"round {r + 1}: " + ", ".join(f"{k} {v['prefill'][-1]:.0f}/{v['decode'][-1]:.1f}" for k, v in res.items()),
              file=sys.stderr, flush=True)
    med = {k: {m: statistics.median(v[m]) for m in v} for k, v in res.items()}
    base = med["llama.cpp"]
    report = {"model": os.path.basename(a.model), "threads": a.threads, "rounds": a.rounds, "runs_per_round": a.runs,
              "medians_tokens_per_s": med,
              "ratios_vs_llamacpp": {k: {m: med[k][m] / base[m] for m in base} for k in med if k != "llama.cpp"},
              "rounds_tokens_per_s": res}
    if a.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{'engine':<12}{'prefill tok/s':>15}{'decode tok/s':>14}{'prefill x':>11}{'decode x':>10}")
    for k, v in med.items():
        rp, rd = v["prefill"] / base["prefill"], v["decode"] / base["decode"]
        print(f"{k:<12}{v['prefill']:>15.1f}{v['decode']:>14.1f}{rp:>11.2f}{rd:>10.2f}")


if __name__ == "__main__":
    main()
