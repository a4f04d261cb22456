#!/usr/bin/env bash
# On the GPU machine: decode-graph replays checked one by one against the same decodes run
# eagerly (diagnose_replay.py; the card's 8B bf16 plan, 2 layers), then run.sh's serving
# validation with its arguments. Logs under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
plan=studies/serving-validation/8b-bf16-$card/plan.json
echo "== replays against eager"
timeout 150 python3 studies/serving-validation/diagnose_replay.py "$plan" --modes graphs \
    > "$OUT/replay-logits.log" 2>&1
echo "rc=$?" >> "$OUT/replay-logits.log"
grep -v Assertion "$OUT/replay-logits.log" | grep -v "^\s*$" | tail -6
bash studies/serving-validation/run.sh "$@"
