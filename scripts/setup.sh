#!/usr/bin/env bash
# One-time set-up: a virtualenv in .venv with synthkd (editable) and its test tools.
# CPU torch for the [train] extra must be pinned in the same pip command (torch==2.13.0), else pip
# pulls a multi-GB CUDA build; the teacher engine itself needs no torch.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null
# torch is pinned in the same command as the [train] extra so pip takes the CPU build.
python -m pip install -q "torch==2.13.0" -e ".[train,dev,fast]"
