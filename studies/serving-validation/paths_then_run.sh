#!/usr/bin/env bash
# On the GPU machine: the card's 8B bf16 plan at full depth through each execution path
# (diagnose.py: piecewise graphs, then all eager under the profiler; per-path mean iteration
# measured against predicted, tokens compared), then run.sh's serving validation with this
# script's arguments. Logs under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
echo "== paths ($card)"
timeout 90 python3 studies/serving-validation/diagnose.py \
    "studies/serving-validation/8b-bf16-$card/plan.json" --layers 32 --requests 12 \
    --modes piecewise,eager --profile > "$OUT/paths.log" 2>&1
echo "rc=$?" >> "$OUT/paths.log"
grep -E "^(piecewise|eager)|^  (graph|piecewise|eager)|against|rc=" "$OUT/paths.log"
bash studies/serving-validation/run.sh "$@"
