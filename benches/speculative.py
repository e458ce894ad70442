#!/usr/bin/env python3
"""Speculative decoding benchmarks: greedy, 256 tokens, 2 threads; prints ratios.

Scenarios (each run is its own process of benches/speculative.rs; runs of a scenario are
alternated, A B then B A, and summarised by the median of per-round ratios, because this
machine's speed drifts by tens of percent over minutes):

  fixed8    Qwen2.5-Coder 1.5B target / 0.5B draft, code prompt, draft length fixed at 8:
            ours vs the C reproduction of llama.cpp's speculative-simple loop
            (benches/c_reference/speculative.c; the example itself is not in the pinned package)
  adaptive  the same pair and prompt, adaptive draft length (max 8) vs plain decoding
  ngram-smollm2, ngram-qwen
            n-gram drafter (adaptive, max 15: a 16-token verify batch, which on this CPU costs
            less per token than 17) on a copy-heavy task — rewrite a 40-line code
            block with a rename (benches/prompts/rename.txt) — vs plain decoding
  ngram-smollm2-q4_0, ngram-smollm2-q8_0, ngram-smollm2-f16
            the same with SmolLM2 re-quantized by the crate from its Q4_1 file: ggml has batched
            x86 kernels for these types but not for Q4_1, so verifying a draft costs far less

    python3 benches/speculative.py [--rounds 3] [--threads 2] [-n 256] [--only fixed8,adaptive,...]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
QWEN = ["--model-name", "qwen-coder-1.5b"]
PAIR = QWEN + ["--draft-name", "qwen-coder-0.5b"]
CODE = ["--prompt-file", os.path.join(HERE, "prompts", "code.txt")]
RENAME = ["--prompt-file", os.path.join(HERE, "prompts", "rename.txt")]

SCENARIOS = {
    "fixed8": (("rust", PAIR + CODE + ["--fixed", "8"]), ("c", PAIR + CODE + ["--fixed", "8"])),
    "adaptive": (("rust", PAIR + CODE + ["--adaptive", "--max", "8"]), ("plain", QWEN + CODE)),
    "ngram-smollm2": (
        ("rust", ["--model-name", "smollm2", "--ngram", "--max", "15"] + RENAME),
        ("plain", ["--model-name", "smollm2"] + RENAME),
    ),
    "ngram-smollm2-q4_0": (
        ("rust", ["--model-name", "smollm2", "--requantize", "q4_0", "--ngram", "--max", "15"] + RENAME),
        ("plain", ["--model-name", "smollm2", "--requantize", "q4_0"] + RENAME),
    ),
    "ngram-smollm2-q8_0": (
        ("rust", ["--model-name", "smollm2", "--requantize", "q8_0", "--ngram", "--max", "15"] + RENAME),
        ("plain", ["--model-name", "smollm2", "--requantize", "q8_0"] + RENAME),
    ),
    "ngram-smollm2-f16": (
        ("rust", ["--model-name", "smollm2", "--requantize", "f16", "--ngram", "--max", "15"] + RENAME),
        ("plain", ["--model-name", "smollm2", "--requantize", "f16"] + RENAME),
    ),
    "ngram-qwen": (("rust", QWEN + ["--ngram", "--max", "15"] + RENAME), ("plain", QWEN + RENAME)),
}


def build():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "speculative", "--no-run", "--message-format=json"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "speculative" and msg.get("executable"):
            return msg["executable"]
    sys.exit("speculative benchmark binary not found in cargo output")


def run(exe, impl, args, common):
    proc = subprocess.run([exe, "--impl", impl] + args + common, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{impl} {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("-n", type=int, default=256)
    ap.add_argument("--only", default=",".join(SCENARIOS))
    args = ap.parse_args()
    exe = build()
    common = ["-n", str(args.n), "--threads", str(args.threads)]
    print(f"binary: {exe}\nthreads {args.threads}, {args.n} greedy tokens, {args.rounds} alternated rounds\n")
    for name in args.only.split(","):
        (a, a_args), (b, b_args) = SCENARIOS[name]
        run(exe, b, b_args, common + ["-n", "8"])  # fetch models, warm the page cache
        ratios, ra, rb = [], [], []
        for r in range(args.rounds):
            pair = [(a, a_args), (b, b_args)] if r % 2 == 0 else [(b, b_args), (a, a_args)]
            res = {impl: run(exe, impl, xs, common) for impl, xs in pair}
            ra.append(res[a])
            rb.append(res[b])
            ratios.append(res[a]["tps"] / res[b]["tps"])
            acc = res[a]["accepted"] / max(res[a]["drafted"], 1)
            print(f"  {name} round {r + 1}: {a} {res[a]['tps']:.2f} t/s, {b} {res[b]['tps']:.2f} t/s, "
                  f"ratio {ratios[-1]:.3f}, acceptance {acc:.1%}, lengths [{res[a]['lengths']}]", flush=True)
        same = all(x["tokens"] == y["tokens"] for x, y in zip(ra, rb))
        med = statistics.median
        print(f"{name}: {a}/{b} = {med(ratios):.3f} (median of {args.rounds}; per round "
              f"{', '.join(f'{x:.2f}' for x in ratios)}); {a} {med(x['tps'] for x in ra):.2f} t/s, "
              f"{b} {med(x['tps'] for x in rb):.2f} t/s; acceptance {a} "
              f"{med(x['accepted'] / max(x['drafted'], 1) for x in ra):.1%}"
              + (f", {b} {med(x['accepted'] / max(x['drafted'], 1) for x in rb):.1%}" if b == "c" else "")
              + f"; identical tokens: {same}\n", flush=True)


if __name__ == "__main__":
    main()
