#!/usr/bin/env python3
"""Rust API vs C reference: speed ratios and peak RSS of the same greedy loop.

Both implementations live in one benchmark binary (benches/greedy_loop.rs), linked against the
same llama.cpp build; each run is its own process so its peak RSS is its own. The machine's
speed drifts over minutes, so the two are alternated (A B, B A, ...) and ratios are taken per
round, then summarised by their median.

    python3 benches/compare_c.py [--rounds 6] [--threads 2] [--models smollm2,gemma3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys


def build():
    out = subprocess.run(
        ["cargo", "bench", "--bench", "greedy_loop", "--no-run", "--message-format=json"],
        check=True, capture_output=True, text=True,
    ).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "greedy_loop" and msg.get("executable"):
            return msg["executable"]
    sys.exit("greedy_loop benchmark binary not found in cargo output")


def run(exe, impl, model, threads, prompt):
    proc = subprocess.Popen(
        [exe, "--impl", impl, "--model-name", model, "--threads", str(threads), "--prompt", prompt],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"{impl} run failed on {model}")
    result = json.loads(out.strip().splitlines()[-1])
    result["rss_mib"] = usage.ru_maxrss / 1024  # Linux reports KiB
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default="smollm2,gemma3")
    ap.add_argument("--prompt", default="The history of the printing press begins in")
    args = ap.parse_args()
    exe = build()
    print(f"binary: {exe}\nthreads: {args.threads}, rounds: {args.rounds}, 512-token prompt + 128 greedy tokens\n")
    print(f"{'model':9} {'pp rust/c':>10} {'tg rust/c':>10} {'pp rust':>9} {'pp c':>9} {'tg rust':>8} {'tg c':>8} {'RSS rust':>9} {'RSS c':>8} tokens")
    for model in args.models.split(","):
        run(exe, "rust", model, args.threads, args.prompt)  # fetch the model, warm the page cache
        pp, tg, rows = [], [], []
        same = True
        for r in range(args.rounds):
            order = ["c", "rust"] if r % 2 == 0 else ["rust", "c"]
            res = {impl: run(exe, impl, model, args.threads, args.prompt) for impl in order}
            pp.append(res["rust"]["pp_tps"] / res["c"]["pp_tps"])
            tg.append(res["rust"]["tg_tps"] / res["c"]["tg_tps"])
            same &= res["rust"]["tokens"] == res["c"]["tokens"]
            rows.append(res)
        med = lambda key, impl: statistics.median(r[impl][key] for r in rows)
        print(
            f"{model:9} {statistics.median(pp):10.3f} {statistics.median(tg):10.3f} "
            f"{med('pp_tps', 'rust'):9.1f} {med('pp_tps', 'c'):9.1f} {med('tg_tps', 'rust'):8.1f} {med('tg_tps', 'c'):8.1f} "
            f"{med('rss_mib', 'rust'):7.1f}Mi {med('rss_mib', 'c'):6.1f}Mi {'identical' if same else 'DIFFER'}"
        )
        print(f"{'':9} per-round pp ratios {[round(x, 3) for x in pp]}, tg ratios {[round(x, 3) for x in tg]}")


if __name__ == "__main__":
    main()
