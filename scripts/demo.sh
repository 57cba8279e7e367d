#!/usr/bin/env bash
# The README's main command: set up (virtualenv in .venv), then the offline end-to-end demo —
# simulated teachers on 127.0.0.1 -> rationales -> consistency filter -> tiny students trained from
# scratch on CPU -> a comparison table. No API key, no internet; about 7 minutes (one torch thread).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
synthkd demo "$@"
