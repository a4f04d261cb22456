#!/usr/bin/env bash
# One short call after next_call8.sh's (NOTES.md, "The decode kernel's programs per SM"): the
# bf16 plan's three loads with the kernel's new defaults (two stages, chunks rounded down) and
# each iteration's time to issue (``issued_s``: how much of a chunk iteration the host set),
# then one sequence of 1,024 keys under the profiler beside the static step it was calibrated
# on (what the serving graph adds at batch 1). Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
OUT=$results PLAN_TIMEOUT=160 bash $here/run.sh 100 bf16
pack
timeout 100 python3 $here/decode_gap.py $results/decode-gap-b1.json --points 1x1024 \
    --splits work --sweep "" > $results/decode-gap-b1.log 2>&1
echo "decode gap rc=$?"
pack
