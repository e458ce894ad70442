#!/usr/bin/env python3
"""Sweeps one tuning constant of speculative decoding: how fast each value runs, relative to the first.

    python3 benches/speculative_tuning.py llama/src/speculative/controller.rs REMEASURE_AFTER 24,12,48 \
        [--rounds 5] [--scenarios ngram-smollm2-q4_0,ngram-smollm2|adaptive|ngram-qwen|ngram-smollm2-f16]

Builds benches/speculative.rs once per value, with the constant's definition in FILE rewritten
(the file is restored afterwards, also on failure), keeps each binary under
target/speculative-tuning/, then runs them round by round in rotating order (each value takes
each place in turn, as this machine drifts over minutes) and prints each value's median tokens/s
and its median per-round ratio to the first value. The controller's constants cite the figures
it printed. Run it from the repository root with the machine otherwise quiet.
"""
import argparse
import os
import re
import shutil
import statistics
import sys

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(HERE, "target", "speculative-tuning")
sys.path.insert(0, os.path.join(HERE, "benches"))
import speculative as bench  # noqa: E402  (the scenarios and the build live there)


def scenario_args(name):
    """The drafting side's flags of one of speculative.py's scenarios."""
    (_, args), _ = bench.SCENARIOS[name]
    return args


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("const")
    ap.add_argument("values")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--scenarios", default="ngram-smollm2-q4_0,ngram-smollm2")
    ap.add_argument("--build-only", action="store_true", help="build the binaries, run nothing")
    ap.add_argument("--run-only", action="store_true", help="run binaries an earlier --build-only left")
    a = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    src = open(a.file).read()
    pat = re.compile(r"(const " + a.const + r": [^=]+= )([^;]+);")
    if not pat.search(src):
        sys.exit(f"{a.const} not found in {a.file}")
    exes = {v: os.path.join(OUT, f"{a.const}_{v}") for v in a.values.split(",")}
    if not a.run_only:
        try:
            for v in exes:
                open(a.file, "w").write(pat.sub(lambda m: m.group(1) + v + ";", src, count=1))
                exes[v] = os.path.join(OUT, f"{a.const}_{v}")
                shutil.copy(bench.build(), exes[v])
        finally:
            open(a.file, "w").write(src)
    if a.build_only:
        return
    common = ["-n", "256", "--threads", "2"]
    vals = list(exes)
    for s in a.scenarios.split(","):
        bench.run(exes[vals[0]], "rust", scenario_args(s), ["-n", "8", "--threads", "2"])  # models, page cache
        tps = {v: [] for v in vals}
        acc = {v: [] for v in vals}
        for r in range(a.rounds):
            order = vals[r % len(vals):] + vals[:r % len(vals)]
            for v in order:
                res = bench.run(exes[v], "rust", scenario_args(s), common)
                tps[v].append(res["tps"])
                acc[v].append(res["accepted"] / max(res["drafted"], 1))
            print(f"  {s} round {r + 1}: " + ", ".join(f"{v}: {tps[v][-1]:.1f}" for v in vals), flush=True)
        base = tps[vals[0]]
        for v in vals:
            ratios = [x / b for x, b in zip(tps[v], base)]
            print(f"{s} {a.const}={v}: median {statistics.median(tps[v]):.1f} t/s, vs {vals[0]} "
                  f"{statistics.median(ratios):.3f} (rounds {', '.join(f'{x:.2f}' for x in ratios)}), "
                  f"acceptance {statistics.median(acc[v]):.1%}", flush=True)


if __name__ == "__main__":
    main()
