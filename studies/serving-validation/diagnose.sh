#!/usr/bin/env bash
# On the GPU machine: decode graphs against eager decodes (diagnose.py) on a 2-layer model of
# the card's 8B bf16 plan; where they disagree or fault, again without PDL and under
# compute-sanitizer; where they agree, the serving validation itself (run.sh).
# studies/serving-validation/diagnose.sh [REQUESTS [PLAN...]]; writes under $OUT.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
uname -r | tee "$OUT/kernel.txt"
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
plan=studies/serving-validation/8b-bf16-$card/plan.json
diagnose() {  # NAME ARGS...: one diagnose.py run, its log under $OUT
    local name=$1; shift
    echo "== $name"
    "$@" > "$OUT/diagnose-$name.log" 2>&1
    echo "rc=$?" >> "$OUT/diagnose-$name.log"
    grep -v "^\s*$" "$OUT/diagnose-$name.log" | grep -v "Assertion" | tail -15
    tail -1 "$OUT/diagnose-$name.log" | grep -q "rc=0"
}
if diagnose graphs timeout 180 python3 studies/serving-validation/diagnose.py "$plan"; then
    bash studies/serving-validation/run.sh "$@"
else
    ROOFTUNE_PDL=0 diagnose no-pdl timeout 150 python3 studies/serving-validation/diagnose.py "$plan"
    diagnose sanitizer timeout 200 compute-sanitizer --tool memcheck --print-limit 30 \
        python3 studies/serving-validation/diagnose.py "$plan" --layers 1 --requests 20 --modes graphs
fi
