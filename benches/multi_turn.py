#!/usr/bin/env python3
"""Chat users taking turns, each turn re-sending the whole conversation, against our server and
llama-server side by side (standard library only).

U users, T turns each. Turn 1 of every user is a ~400-word message of notes (different per user);
later turns add a short question. Users take turns: every user's turn 1, then every user's turn 2,
and so on, one request at a time, as people chatting in turn with one local server. Every reply is
exactly --reply tokens (greedy, end-of-text banned with logit_bias), so both servers do the same work.

Per run it reports the share of prompt tokens served from the server's cache (over all turns) and
the median time to the whole reply for turns >= 2. Each round starts a fresh server of each kind,
alternating which goes first; --summary prints medians and ours / llama-server within each round.

    python3 benches/multi_turn.py --ours target/release/examples/server --lcp $A/build/bin/llama-server \\
        --model ~/.cache/llama-rs/models/SmolLM2-135M-Instruct.Q4_1.gguf --users 3,8 --rounds 3 --out /tmp/mt.jsonl
    python3 benches/multi_turn.py --summary --out /tmp/mt.jsonl
"""
import argparse
import http.client
import json
import os
import signal
import statistics
import subprocess
import sys
import time

PORT = 18091
WORDS = ["harbor", "ledger", "orchard", "signal", "copper", "meadow", "lantern", "quarry", "ribbon", "summit",
         "timber", "velvet", "willow", "anchor", "beacon", "canyon", "dynamo", "ember", "falcon", "glacier"]
QUESTIONS = ["What is the most important point so far?", "Which note should I act on first, and why?",
             "Summarise the last two notes in one sentence.", "What is missing from these notes?",
             "Turn that into a short checklist."]


def notes(user):
    """~400 words of notes, different for every user."""
    lines = []
    for i in range(20):
        a, b, c = (WORDS[(user * 7 + i * k) % len(WORDS)] for k in (1, 3, 5))
        lines.append("Note %d for project %d: check the %s near the %s, then order more %s before Friday; "
                     "ask the team whether the schedule still holds." % (i + 1, user, a, b, c))
    return "Here are my notes for today.\n" + "\n".join(lines)


def post(path, body, timeout=600):
    c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError("HTTP %d: %s" % (r.status, data[:300]))
    return json.loads(data)


def cached_tokens(resp):
    usage = resp.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    if "cached_tokens" in details:
        return details["cached_tokens"]
    timings = resp.get("timings") or {}
    return timings.get("cache_n", 0)


def conversation_run(users, turns, reply):
    histories = [[] for _ in range(users)]
    prompt = cached = 0
    later, times = [], []
    for t in range(turns):
        for u in range(users):
            text = notes(u) if t == 0 else QUESTIONS[(t - 1) % len(QUESTIONS)]
            histories[u].append({"role": "user", "content": text})
            body = {"model": "m", "messages": histories[u], "max_tokens": reply, "temperature": 0,
                    "logit_bias": {"0": -100, "1": -100, "2": -100}}
            started = time.time()
            resp = post("/v1/chat/completions", body)
            took = time.time() - started
            histories[u].append({"role": "assistant", "content": resp["choices"][0]["message"]["content"]})
            prompt += resp["usage"]["prompt_tokens"]
            cached += cached_tokens(resp)
            if t >= 1:
                later.append(took)
            times.append(round(took, 4))
    return {"times": times, "prompt_tokens": prompt, "cached_tokens": cached, "cached_share": cached / max(prompt, 1),
            "reply_s_turn2plus_p50": statistics.median(later) if later else None}


def server_cmd(kind, exe, model, slots, ctx, threads):
    if kind == "ours":
        return [exe, "--host", "127.0.0.1", "--port", str(PORT), "--threads", str(threads), "--parallel", str(slots),
                "--ctx", str(ctx), "--model", "m=%s" % model]
    return [exe, "-m", model, "-t", str(threads), "--host", "127.0.0.1", "--port", str(PORT), "-np", str(slots),
            "-kvu", "-c", str(ctx)]


def wait_health(proc, timeout=120.0):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            return False
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def run_one(a, kind, exe, users, rnd):
    cmd = server_cmd(kind, exe, a.model, a.slots, a.ctx, a.threads)
    rec = {"server": kind, "users": users, "turns": a.turns, "round": rnd, "cmd": cmd}
    log = open(os.path.join(a.logdir, "mt-%s-u%d-r%d.log" % (kind, users, rnd)), "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        if not wait_health(proc):
            rec["error"] = "not healthy"
        else:
            rec.update(conversation_run(users, a.turns, a.reply))
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        rec["error"] = str(e)
    finally:
        stop(proc)
        log.close()
    return rec


def summary(path):
    recs = [json.loads(l) for l in open(path) if l.strip()]
    for users in sorted({r["users"] for r in recs}):
        rows = [r for r in recs if r["users"] == users and "error" not in r]
        print("U=%d, %s turns" % (users, sorted({r["turns"] for r in rows})))
        for kind in ("ours", "lcp"):
            mine = [r for r in rows if r["server"] == kind]
            if mine:
                print("  %-5s cached share %s   turn>=2 reply p50 %s s" % (
                    kind, " ".join("%.3f" % r["cached_share"] for r in mine),
                    " ".join("%.3f" % r["reply_s_turn2plus_p50"] for r in mine)))
        shares, times = [], []
        for rnd in sorted({r["round"] for r in rows}):
            o = [r for r in rows if r["round"] == rnd and r["server"] == "ours"]
            l = [r for r in rows if r["round"] == rnd and r["server"] == "lcp"]
            if o and l:
                shares.append(o[0]["cached_share"] - l[0]["cached_share"])
                times.append(o[0]["reply_s_turn2plus_p50"] / l[0]["reply_s_turn2plus_p50"])
        if times:
            print("  within-round medians: cached share ours - lcp %+.3f, reply time ours / lcp %.3f (%d rounds)" % (
                statistics.median(shares), statistics.median(times), len(times)))
    errors = [r for r in recs if "error" in r]
    for r in errors:
        print("error:", r["server"], r["users"], r["round"], r["error"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ours")
    ap.add_argument("--lcp")
    ap.add_argument("--model")
    ap.add_argument("--users", default="3,8")
    ap.add_argument("--turns", type=int, default=4)
    ap.add_argument("--reply", type=int, default=48, help="tokens per reply")
    ap.add_argument("--slots", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", action="store_true")
    a = ap.parse_args()
    if a.summary:
        summary(a.out)
        return
    if not (a.model and (a.ours or a.lcp)):
        sys.exit("give --model and at least one of --ours / --lcp")
    a.logdir = os.path.dirname(os.path.abspath(a.out))
    servers = [(k, e) for k, e in (("ours", a.ours), ("lcp", a.lcp)) if e]
    with open(a.out, "a") as out:
        for rnd in range(a.rounds):
            for users in (int(u) for u in a.users.split(",")):
                order = servers if rnd % 2 == 0 else servers[::-1]
                for kind, exe in order:
                    rec = run_one(a, kind, exe, users, rnd)
                    print(json.dumps({k: v for k, v in rec.items() if k != "cmd"}), flush=True)
                    out.write(json.dumps(rec) + "\n")
                    out.flush()
    summary(a.out)


if __name__ == "__main__":
    main()
