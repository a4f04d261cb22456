#!/usr/bin/env bash
# tune validate --traffic on the GPU machine: Llama-3.1-8B plans for this card (bf16, then FP8
# weights with an FP8 cache), each at 0.2x capacity, the plan's rate and 1.5x capacity.
# Run from the repository root: studies/serving-validation/run.sh [REQUESTS [PLAN...]] (PLAN:
# bf16, fp8, bf16-summarization, bf16-draft, bf16-eagle; default bf16 fp8); writes under $OUT.
# PLAN_TIMEOUT: seconds for each plan (200); TUNE: the command run as `tune` (a study's variant);
# LOADS: the loads to run (--loads; default all three).
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
cat "$OUT/nvidia-smi.csv"
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
    *H200*) card=h200 ;;
    *) card=h100 ;;
esac
requests=${1:-200}
shift || true
for q in ${@:-bf16 fp8}; do
    name=8b-${q%%-*}-$card${q#${q%%-*}}
    mkdir -p "$OUT/$name"
    cp "studies/serving-validation/$name/plan.json" "$OUT/$name/plan.json"
    echo "== $name"
    timeout "${PLAN_TIMEOUT:-200}" ${TUNE:-python3 -m tuner.cli} validate "$OUT/$name/plan.json" --traffic \
        --requests "$requests" ${LOADS:+--loads "$LOADS"} --iterations "$OUT/$name/iterations.csv" > "$OUT/$name/traffic.log" 2>&1
    echo "rc=$?" >> "$OUT/$name/traffic.log"
    tail -25 "$OUT/$name/traffic.log"
done
