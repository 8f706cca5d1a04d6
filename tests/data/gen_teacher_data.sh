#!/usr/bin/env bash
# Regenerates tests/data/teacher_<model>.json: the first 512 tokens of tests/data/teacher_text.txt
# as each real model tokenizes it, and llama.cpp's argmax after every position when the whole
# sequence is evaluated at once (teacher forcing).
#   ORACLE=/path/to/oracle TOKENIZE=/path/to/llama-tokenize tests/data/gen_teacher_data.sh
# ORACLE is the llama.cpp-linked program described in gen_arch_data.sh; with TF=1 it prints the
# argmax at every position of its ids as a JSON array. TOKENIZE is llama.cpp's llama-tokenize.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
: "${ORACLE:?set ORACLE to the llama.cpp oracle program}"
: "${TOKENIZE:?set TOKENIZE to the llama-tokenize program of llama.cpp}"
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
for pair in smollm2:SmolLM2-135M-Instruct.Q4_1.gguf gemma3:gemma-3-270m-q4_k_m.gguf; do
    name=${pair%%:*}
    model=$here/models/${pair#*:}
    "$TOKENIZE" -m "$model" -f "$here/tests/data/teacher_text.txt" --ids --log-disable 2>/dev/null |
        tail -1 >"$tmp"
    ids=$(python3 -c 'import json, sys; print(" ".join(str(i) for i in json.load(open(sys.argv[1]))[:512]))' "$tmp")
    # shellcheck disable=SC2086  # ids are words on purpose
    argmax=$(TF=1 UB=${UB:-1} "$ORACLE" "$model" 0 $ids 2>/dev/null)
    python3 -c 'import json,sys; print(json.dumps({"model": sys.argv[1], "ids": [int(x) for x in sys.argv[2].split()], "argmax": json.loads(sys.argv[3])}))' \
        "$name" "$ids" "$argmax" >"$here/tests/data/teacher_$name.json"
    echo "wrote tests/data/teacher_$name.json"
done
