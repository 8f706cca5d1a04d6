#!/usr/bin/env bash
# bench/run_serve.sh - `make bench`, engine-service part (issue 5): bench_serve against agentd
# with the default model and 2 threads (aggregate decode at 1/4/8/16 sequences, TTFT, shared
# prefix, constrained vs free decoding, ping under load, SERVE_CALLS tool calls against random
# schemas, default 1000), bench_step (the same decode in-process, sequences in lockstep), then
# the same load against llama.cpp when it is available:
#   LLAMA_CPP_BIN=dir  a llama.cpp build's bin directory: llama-batched-bench -npp 128 -ntg 128
#                      -npl 1,4,8,16 and llama-server -np 16 driven by llama_server_load.py.
#   SERVE_ROUNDS=N     bench_serve's rounds (1..5, default 5); STEP_ROUNDS=N bench_step's.
# llama.cpp is not part of this project and is never built by it. Exits 0 whatever the speed.
set -u
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
THREADS=${THREADS:-2}
MODEL=${MODEL_FILE:-models/SmolLM2-135M-Instruct.Q4_1.gguf}
CALLS=${SERVE_CALLS:-1000}
[ -x "$BUILD/bench/bench_serve" ] || { echo "bench: $BUILD/bench/bench_serve is missing; run 'make' first" >&2; exit 1; }
[ -f "$MODEL" ] || { echo "bench: $MODEL is missing; run 'make model'" >&2; exit 1; }

echo "== agentd engine service ($(date -u +%F), $(nproc) cores, $THREADS threads)"
AGENTD_BIN_DIR=$BUILD "$BUILD/bench/bench_serve" -m "$MODEL" -t "$THREADS" --calls "$CALLS"
echo
echo "== engine steps in-process (bench_step: N sequences decoding together, median step)"
"$BUILD/bench/bench_step" "$MODEL" "$THREADS" 128 128 1 4 8 16

LB=${LLAMA_CPP_BIN:-}
if [ -z "$LB" ]; then
    echo
    echo "(set LLAMA_CPP_BIN to a llama.cpp bin directory to measure llama-batched-bench and llama-server beside it)"
    exit 0
fi
if [ -x "$LB/llama-batched-bench" ]; then
    echo
    echo "== llama-batched-bench (same model, -t $THREADS, -npp 128 -ntg 128 -npl 1,4,8,16)"
    "$LB/llama-batched-bench" -m "$MODEL" -t "$THREADS" -c 8192 -b 2048 -ub 512 -npp 128 -ntg 128 \
        -npl 1,4,8,16 2>/dev/null | grep -E '^\|' || echo "llama-batched-bench failed"
fi
if [ -x "$LB/llama-server" ]; then
    echo
    echo "== llama-server (-t $THREADS -np 16 -c 8192), the same load as bench_serve"
    port=$((20000 + RANDOM % 20000))
    "$LB/llama-server" -m "$MODEL" -t "$THREADS" -np 16 -c 8192 --port "$port" \
        >/tmp/llama-server-bench.log 2>&1 &
    pid=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
        python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/health')" \
            >/dev/null 2>&1 && break
        sleep 0.2
    done
    python3 bench/llama_server_load.py "http://127.0.0.1:$port" || echo "llama-server load failed"
    kill "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
fi
exit 0
