#!/usr/bin/env bash
# Regenerates tests/data/arch_tiny.jsonl: llama.cpp's top-5 logits and argmax along a fixed token
# sequence for the tiny random-weight models that build/tests/test_arch writes (tests/test_arch.c).
#   ORACLE=/path/to/oracle tests/data/gen_arch_data.sh
# ORACLE is a small program linked against a llama.cpp build (libllama), not part of this
# repository: `FORCE=1 ORACLE MODEL P ID...` loads MODEL, evaluates the first P ids in one batch,
# then the others one at a time (F16 KV cache, llama.cpp's default) and prints
# {"ids": [argmax per step], "top": [[[id, logit] x5] per step]}, one step before each of the
# later ids and one after the last. tests/data/README.md describes it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${ORACLE:?set ORACLE to the llama.cpp oracle program}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
out="$here/tests/data/arch_tiny.jsonl"
: >"$out"
"$here/build/tests/test_arch" --write "$tmp" | while read -r arch path ids; do
    # shellcheck disable=SC2086  # ids are words on purpose
    res=$(FORCE=1 "$ORACLE" "$path" 40 $ids 2>/dev/null)
    python3 -c 'import json,sys; r=json.loads(sys.argv[3]); print(json.dumps({"arch": sys.argv[1], "kv": "f16", "seq_ids": [int(x) for x in sys.argv[2].split()], **r}))' \
        "$arch" "$ids" "$res" >>"$out"
done
echo "wrote $out"
