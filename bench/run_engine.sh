#!/usr/bin/env bash
# bench/run_engine.sh - `make bench`, engine part: for every installed model, the engine's prefill
# (128 and 512 prompt tokens) and decode (128 tokens) speed with 2 threads and its peak RSS,
# beside llama.cpp's llama-bench on the same GGUF in the same run when one is available.
#
# llama.cpp is not part of this project and is never built by it. Point LLAMA_BENCH at a
# llama-bench binary (and it is used), or leave it unset (only the engine is measured).
# Runs are interleaved: engine, llama.cpp, engine, llama.cpp... (BENCH_ROUNDS rounds, default 2),
# each round a full llama-bench-style run (warm-up + BENCH_REPS timed repetitions, default 3);
# the best round's mean is reported, which on a noisy shared VM is the figure least disturbed
# by other load. Peak RSS is the process's maximum resident set (getrusage of the child).
#
# Environment: THREADS (default 2), BENCH_REPS, BENCH_ROUNDS, LLAMA_BENCH, BUILD (default build).
# Exits 0 whatever the speed: this is a report.
set -u
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
REPS=${BENCH_REPS:-3}
ROUNDS=${BENCH_ROUNDS:-2}
ENGINE=$BUILD/bench/bench_engine
[ -x "$ENGINE" ] || { echo "bench: $ENGINE is missing; run 'make' first" >&2; exit 1; }
LB=${LLAMA_BENCH:-}
if [ -n "$LB" ] && [ ! -x "$LB" ]; then
    echo "bench: LLAMA_BENCH=$LB is not executable; measuring the engine only" >&2
    LB=
fi

# Runs a command, prints its stdout, then a line "peak_rss_kib N" (the child's maximum RSS).
with_rss() {
    python3 - "$@" <<'PY'
import resource, subprocess, sys
p = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
sys.stdout.write(p.stdout)
print("peak_rss_kib", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(p.returncode)
PY
}

# Prints "pp128 pp512 tg128 rss_kib" for one engine run.
engine_round() {
    with_rss "$ENGINE" "$1" -t "$THREADS" -p 128,512 -n 128 -r "$REPS" --json | python3 -c '
import json, sys
v = {}
for line in sys.stdin:
    if line.startswith("peak_rss_kib"):
        v["rss"] = int(line.split()[1])
    elif line.startswith("{"):
        j = json.loads(line)
        if "test" in j:
            v[j["test"]] = j["tokens_per_s"]
print(v.get("pp128", "ERR"), v.get("pp512", "ERR"), v.get("tg128", "ERR"), v.get("rss", "ERR"))'
}

# The same for one llama-bench run (its jsonl output: one object per test, avg_ts).
llama_round() {
    with_rss "$LB" -m "$1" -t "$THREADS" -p 128,512 -n 128 -r "$REPS" -o jsonl | python3 -c '
import json, sys
v = {}
for line in sys.stdin:
    if line.startswith("peak_rss_kib"):
        v["rss"] = int(line.split()[1])
    elif line.startswith("{"):
        j = json.loads(line)
        key = ("pp%d" % j["n_prompt"]) if j["n_prompt"] else ("tg%d" % j["n_gen"])
        v[key] = round(j["avg_ts"], 2)
print(v.get("pp128", "ERR"), v.get("pp512", "ERR"), v.get("tg128", "ERR"), v.get("rss", "ERR"))'
}

# best "a b c rss" lines -> the maximum of each speed column and the minimum RSS
best_of() {
    python3 -c '
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
def num(x):
    try: return float(x)
    except ValueError: return None
out = []
for col in range(4):
    vals = [num(r[col]) for r in rows if num(r[col]) is not None]
    if not vals: out.append("ERR"); continue
    out.append("%.2f" % max(vals) if col < 3 else "%d" % min(vals))
print(" ".join(out))'
}

echo "agentd engine benchmark"
echo "date:     $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "machine:  $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)," \
    "$(uname -sr)"
echo "threads:  $THREADS; best of $ROUNDS interleaved rounds, each a warm-up + $REPS repetitions"
echo "commands:"
echo "  $ENGINE MODEL -t $THREADS -p 128,512 -n 128 -r $REPS --json"
if [ -n "$LB" ]; then
    echo "  $LB -m MODEL -t $THREADS -p 128,512 -n 128 -r $REPS -o jsonl"
    echo "  llama.cpp: $("$LB" -m models/SmolLM2-135M-Instruct.Q4_1.gguf -p 0 -n 1 -r 1 -o jsonl 2>/dev/null |
        python3 -c 'import json, sys
for line in sys.stdin:
    j = json.loads(line); print("build", j.get("build_number"), "commit", j.get("build_commit")); break' ||
        echo unknown)"
else
    echo "  (llama.cpp: set LLAMA_BENCH=/path/to/llama-bench to measure it beside)"
fi
echo

models=()
for f in models/SmolLM2-135M-Instruct.Q4_1.gguf models/gemma-3-270m-q4_k_m.gguf; do
    [ -f "$f" ] && models+=("$f")
done
[ ${#models[@]} -gt 0 ] || { echo "bench: no models installed; run 'make model MODEL=all'" >&2; exit 1; }

printf '%-34s %-10s %10s %10s %10s %10s\n' model engine pp128 pp512 tg128 "RSS MiB"
for f in "${models[@]}"; do
    e_rows="" l_rows=""
    for _ in $(seq "$ROUNDS"); do
        e_rows+="$(engine_round "$f")"$'\n'
        [ -n "$LB" ] && l_rows+="$(llama_round "$f")"$'\n'
    done
    read -r e128 e512 etg erss <<<"$(best_of <<<"$e_rows")"
    printf '%-34s %-10s %10s %10s %10s %10s\n' "$(basename "$f")" agentd "$e128" "$e512" "$etg" \
        "$(awk -v k="$erss" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print k }')"
    if [ -n "$LB" ]; then
        read -r l128 l512 ltg lrss <<<"$(best_of <<<"$l_rows")"
        printf '%-34s %-10s %10s %10s %10s %10s\n' "" llama.cpp "$l128" "$l512" "$ltg" \
            "$(awk -v k="$lrss" 'BEGIN { if (k ~ /^[0-9]+$/) printf "%.1f", k / 1024; else print k }')"
        printf '%-34s %-10s %10s %10s %10s %10s\n' "" ratio \
            "$(awk -v a="$e128" -v b="$l128" 'BEGIN { printf "%.2fx", a / b }')" \
            "$(awk -v a="$e512" -v b="$l512" 'BEGIN { printf "%.2fx", a / b }')" \
            "$(awk -v a="$etg" -v b="$ltg" 'BEGIN { printf "%.2fx", a / b }')" \
            "$(awk -v a="$erss" -v b="$lrss" 'BEGIN { printf "%.2fx", a / b }')"
    fi
done
echo
echo "targets (issue 3): decode >= 1.2x llama.cpp, prefill >= 1.0x, RSS <= llama.cpp's"
exit 0
