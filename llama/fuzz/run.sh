#!/usr/bin/env bash
# Fuzzes the safe crate with cargo fuzz (libFuzzer) and reports per target.
#
#   llama/fuzz/run.sh TARGET|all [MINUTES]   fuzz each target for MINUTES of CPU time (default 1)
#   llama/fuzz/run.sh replay [TARGET|all]    run every input of the seeds and corpus once
#
# The ordinary test suite replays the same inputs through the same target code without cargo
# fuzz (`cargo test -p llama --test fuzz_replay`): that is what CI runs.
#   llama/fuzz/run.sh list                   the targets
#
# Targets: gguf, tokenize, grammar, json_schema, chat_template, state, server, metadata, media. Starting inputs are the
# committed seeds/TARGET; what libFuzzer finds interesting goes to corpus/TARGET (ignored by
# git), crashes to artifacts/TARGET. Reproduce one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir llama/fuzz TARGET llama/fuzz/artifacts/TARGET/crash-...
# Only a stable toolchain is needed: RUSTC_BOOTSTRAP=1 lets it take cargo fuzz's nightly flags.
# The first run builds llama.cpp for this workspace (a few minutes; ccache helps). Set
# FUZZ_JOBS=N for N parallel jobs per target, FUZZ_LEAKS=1 to report leaks (off: llama.cpp keeps
# process-wide state), FUZZ_SANITIZER=none for a faster build without AddressSanitizer.
set -euo pipefail
# cargo fuzz finds this crate as fuzz/ of the crate above it.
cd "$(dirname "$0")/.."
export RUSTC_BOOTSTRAP=1

TARGETS=(gguf tokenize grammar json_schema chat_template state server metadata media)
SANITIZER="${FUZZ_SANITIZER:-address}"
JOBS="${FUZZ_JOBS:-1}"
LEAKS="${FUZZ_LEAKS:-0}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is missing: cargo install cargo-fuzz" >&2
    exit 2
fi

usage() { sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

pick() {
    case "${1:-all}" in
        all) echo "${TARGETS[@]}" ;;
        *) for t in "${TARGETS[@]}"; do [[ $t == "$1" ]] && { echo "$t"; return; }; done
           echo "unknown target $1 (one of: ${TARGETS[*]})" >&2; exit 2 ;;
    esac
}

# One libFuzzer run of TARGET with extra flags; its log goes to $log.
fuzz() {
    local target=$1; shift
    mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target" "fuzz/artifacts/$target"
    # metadata: a quarter of its time went to tracing llama.cpp's own memcmps (the vocabulary's
    # string maps), which the mutator, picking keys from its own list, has no use for.
    local extra=()
    [[ $target == metadata ]] && extra+=(-use_memcmp=0)
    cargo fuzz run --sanitizer "$SANITIZER" "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
        -artifact_prefix="fuzz/artifacts/$target/" -timeout=20 -rss_limit_mb=3072 -detect_leaks="$LEAKS" \
        -print_final_stats=1 "${extra[@]}" "$@" >"$log" 2>&1
}

# CPU seconds used so far by this script's finished children (user + system). `times` must run
# in this shell, not in a command substitution's subshell (whose children are none), so it writes
# to a file that is parsed after.
children_cpu() {
    tail -1 "$logs/times" | awk '{ t = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); t += p[1] * 60 + p[2] } printf "%d", t }'
}
stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}' || true; }
# Crashes, timeouts, out-of-memory and leaks; libFuzzer's slow-unit-* notes are not findings.
findings() {
    mkdir -p "fuzz/artifacts/$1"
    find "fuzz/artifacts/$1" -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' \) | wc -l
}

mode=${1:-}
[[ -z $mode ]] && usage
[[ $mode == list ]] && { echo "${TARGETS[@]}"; exit 0; }
logs=$(mktemp -d)
cargo fuzz build --sanitizer "$SANITIZER" >"$logs/build.log" 2>&1 || { cat "$logs/build.log" >&2; exit 1; }

status=0
if [[ $mode == replay ]]; then
    printf '%-14s %8s %8s %s\n' target inputs seconds result
    for t in $(pick "${2:-all}"); do
        log="$logs/$t.log"
        start=$SECONDS
        if fuzz "$t" -runs=0; then result=ok; else result="FAILED (see $log)"; status=1; fi
        inputs=$(grep -m1 -o 'INITED.*' "$log" | grep -o 'corp: [0-9]*' | awk '{print $2}' || true)
        printf '%-14s %8s %8s %s\n' "$t" "${inputs:-0}" "$((SECONDS - start))" "$result"
        [[ $result == ok ]] || tail -30 "$log" >&2
    done
    exit $status
fi

minutes=${2:-1}
seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
# MINUTES are CPU minutes of the fuzzer: on a shared machine wall time says little. Each target
# runs in slices of at most 5 wall minutes until its CPU time reaches the goal.
printf '%-14s %8s %8s %12s %10s %8s %9s\n' target cpu-s wall-s executions exec/cpu-s corpus findings
for t in $(pick "$mode"); do
    log="$logs/$t.log"
    before=$(findings "$t")
    cpu=0 wall=0 execs=0
    while [[ $cpu -lt $seconds ]]; do
        slice=$(( seconds - cpu < 300 ? seconds - cpu : 300 ))
        [[ $slice -lt 10 ]] && slice=10
        flags=(-max_total_time="$slice")
        [[ $JOBS -gt 1 ]] && flags+=(-fork="$JOBS")
        start=$SECONDS
        times >"$logs/times"
        used=$(children_cpu)
        fuzz "$t" "${flags[@]}" || true
        wall=$(( wall + SECONDS - start ))
        times >"$logs/times"
        cpu=$(( cpu + $(children_cpu) - used ))
        execs=$(( execs + $(stat number_of_executed_units || echo 0) ))
        [[ $(findings "$t") -gt $before ]] && break
    done
    new=$(( $(findings "$t") - before ))
    [[ $new -gt 0 ]] && status=1
    printf '%-14s %8s %8s %12s %10s %8s %9s\n' "$t" "$cpu" "$wall" "$execs" "$(( execs / (cpu > 0 ? cpu : 1) ))" \
        "$(find "fuzz/corpus/$t" -type f | wc -l)" "$new"
    [[ $new -gt 0 ]] && { grep -m3 -E 'ERROR|panicked|SUMMARY' "$log" >&2 || true; echo "  log: $log" >&2; }
done
exit $status
