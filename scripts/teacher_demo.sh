#!/usr/bin/env bash
# The teacher engine alone, offline: no API key, no internet.
# Starts the fault-injecting OpenAI-compatible test server on 127.0.0.1, completes 200 real GSM8K
# questions through it (500s, hangs, malformed bodies, a rate limit), then reruns the same command to
# show that a rerun costs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
out=runs/demo-complete
rm -rf "$out"; mkdir -p "$out"
synthkd serve-test --port 0 --latency-ms 150 --jitter-ms 50 --rpm 3000 --error-rate 0.1 --hang-rate 0.02 \
  --hang-seconds 60 --malformed-rate 0.02 --seed 1 > "$out/server.log" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q READY "$out/server.log" 2>/dev/null && break; sleep 0.2; done
url=$(awk '/READY/{print $2}' "$out/server.log")
echo "test teacher at $url (10% 500s, 2% 60 s hangs, 2% malformed bodies, 3000 RPM limit)"
echo "== first run =="
synthkd complete -i data/gsm8k_test_200.jsonl -o "$out/completions.jsonl" -m test-model --base-url "$url" \
  --cache "$out/cache.sqlite" --rpm 3000 -c 32 --summary-json "$out/summary.json"
echo "== rerun into a new file: every answer comes from the cache =="
synthkd complete -i data/gsm8k_test_200.jsonl -o "$out/completions-again.jsonl" -m test-model --base-url "$url" \
  --cache "$out/cache.sqlite" --rpm 3000 -c 32
python - "$url" <<'PY'
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(sys.argv[1].rsplit("/v1", 1)[0] + "/_stats"))
print("server saw", s["requests_total"], "requests in all:", s["by_outcome"])
PY
echo "output: $out/completions.jsonl ($(wc -l < "$out/completions.jsonl") rows)"
