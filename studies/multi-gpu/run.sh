#!/usr/bin/env bash
# The multi-GPU validation, ready for a machine of 8 H100s (or H200s; say which): run from the
# repository root as studies/multi-gpu/run.sh PART... (step, traffic, allreduce); writes under
# $OUT. Each plan is copied first, so the checked-in ones stay as planned.
set -u
python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>/dev/null
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/nvidia-smi.csv"
validate() {  # plan folder, tp, extra arguments
    local name=$1 tp=$2; shift 2
    mkdir -p "$OUT/$name"
    cp "studies/multi-gpu/$name/plan.json" "$OUT/$name/plan.json"
    timeout 580 torchrun --nproc-per-node "$tp" -m tuner.cli validate "$OUT/$name/plan.json" "$@" \
        > "$OUT/$name/validate$*.log" 2>&1
    tail -20 "$OUT/$name/validate$*.log"
}
for part in "$@"; do
    case $part in
    step)  # item 1 (and 3's step level): the plans' steps at TP 2, 4, 8
        validate 70b-fp8-tp4 4
        validate 70b-fp8-tp2 2
        validate 70b-bf16-tp8 8
        validate 405b-fp8-tp8-h100 8 ;;
    traffic)  # items 2 and 3: the plans' traffic at three loads
        validate 70b-fp8-tp2 2 --traffic --requests 200
        validate 70b-fp8-tp4 4 --traffic --requests 200
        validate 70b-bf16-tp8 8 --traffic --requests 200
        validate 405b-fp8-tp8-h100 8 --traffic --requests 100 ;;
    allreduce)  # item 4: the TP all-reduce at 2, 4 and 8 GPUs, for the collective terms' refit
        for n in 2 4 8; do
            timeout 300 torchrun --nproc-per-node $n -m executor.bench --suite tp,allreduce \
                --out "$OUT/allreduce-tp$n" > "$OUT/allreduce-tp$n.log" 2>&1
        done ;;
    esac
done
