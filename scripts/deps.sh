#!/usr/bin/env bash
# Installs the Debian packages agentd needs to build and test, when they are missing.
#   scripts/deps.sh           install what is missing (apt-get; as root, or prints the command)
#   scripts/deps.sh --check   exit 0 when everything is present, 1 otherwise (installs nothing)
#   scripts/deps.sh --bench   also the packages `make bench` compares against (redis, bubblewrap)
#
# The tests' Python packages (the official MCP SDK, for tests/mcp/server.py) go into a
# virtualenv of the repository, .venv-test/ (git-ignored), made with Debian's python3 and
# installed by pip from its default index; tests/test_mcp.c runs .venv-test/bin/python.
set -u
pkgs="build-essential pkg-config libuv1-dev libcjson-dev libsqlite3-dev libyaml-dev libseccomp-dev libcurl4-openssl-dev libxml2-dev zlib1g-dev python3 python3-pip python3-venv"
# Pinned: the SDK's stdio and streamable-HTTP servers (FastMCP) as the tests use them.
MCP_VERSION=1.30.0
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv-test"
check_only=0
for a in "$@"; do
    case "$a" in
    --check) check_only=1 ;;
    --bench) pkgs="$pkgs redis-server redis-tools bubblewrap" ;;
    --fuzz) pkgs="$pkgs clang libclang-rt-14-dev" ;;
    *) echo "usage: $0 [--check] [--bench] [--fuzz]" >&2; exit 2 ;;
    esac
done
missing=""
for p in $pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
# The venv is complete when pip recorded the pinned SDK in it (a glob: no Python start-up).
venv_ok() {
    [ -x "$venv/bin/python" ] && compgen -G "$venv/lib/python3*/site-packages/mcp-$MCP_VERSION.dist-info" >/dev/null
}
install_venv() {
    venv_ok && return 0
    echo "deps: installing mcp==$MCP_VERSION into .venv-test/"
    py=python3
    [ -x /usr/bin/python3 ] && py=/usr/bin/python3
    { [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"; } ||
        { echo "deps: python3 -m venv $venv failed" >&2; return 1; }
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "mcp==$MCP_VERSION" ||
        { echo "deps: pip install mcp==$MCP_VERSION failed" >&2; return 1; }
}
if [ -z "$missing" ]; then
    [ "$check_only" = 1 ] && { venv_ok; exit; }
    install_venv || exit 1
    exit 0
fi
[ "$check_only" = 1 ] && exit 1
echo "deps: installing:$missing"
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=sudo
    else
        echo "deps: missing packages; run as root:" >&2
        echo "  apt-get update && apt-get install -y$missing" >&2
        exit 1
    fi
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
# Package lists on a new machine are stale: refresh once, quietly, before installing.
$SUDO apt-get update -qq >/dev/null || { echo "deps: apt-get update failed" >&2; exit 1; }
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null ||
    { echo "deps: apt-get install failed for:$missing" >&2; exit 1; }
install_venv || exit 1
echo "deps: done"
