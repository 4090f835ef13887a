#!/bin/bash
# The allocator's gain on the real trainer: paper preset, the same first STEPS steps, one
# process per allocator, alternating tcmalloc and glibc (ATTNLESS_ALLOCATOR=system), ROUNDS
# rounds; prints target tokens/s after the first log window and the losses (must be equal).
# Usage: tools/allocator_gain.sh [STEPS=240] [ROUNDS=2]   (about 1 min per run on 2 cores)
set -euo pipefail
STEPS=${1:-240}
ROUNDS=${2:-2}
PY=${PYTHON:-.venv/bin/python}
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
for round in $(seq "$ROUNDS"); do
  for allocator in tcmalloc system; do
    name=$allocator-$round
    ATTNLESS_ALLOCATOR=$allocator "$PY" -m attnless train experiments/paper.yaml -q \
      --set run_root="$ROOT" --set name="$name" --set train.max_steps="$STEPS" \
      --set train.log_every=20 --set train.save_every=100000 >"$ROOT/$name.log" 2>&1
    "$PY" - "$ROOT"/*/"$name"/metrics.jsonl "$name" <<'PY'
import json
import sys

records = [json.loads(line) for line in open(sys.argv[1])]
start = next(r for r in records if r.get("kind") == "start")
windows = [r for r in records if r.get("kind") == "train"][1:]  # the first: warm-up
tokens = sum(r["tokens"] for r in windows)
seconds = sum(r["tokens"] / r["tokens_per_s"] for r in windows)
losses = [round(r["loss"], 4) for r in windows]
print(f"{sys.argv[2]:11} allocator={start.get('allocator')}  {tokens / seconds:,.0f} target tokens/s  losses {losses}")
PY
  done
done
