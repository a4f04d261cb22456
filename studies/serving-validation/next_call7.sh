#!/usr/bin/env bash
# Device calls after the kernel-launch sweep was built (NOTES.md, "Next"), on whichever card:
# the paged decode kernel alone over kernel_launch.VARIANTS at serving batches of mixed lengths
# (bf16 and FP8 caches), the fastest launch chosen (choose_kernel.py), then the plans served
# with it (with_kernel.py): bf16 and FP8 at three loads, the EAGLE and draft plans at the plan's
# rate, the summarization plan on a shared GPU (preemption at overload); after FP8, `tune
# measure`'s FP8-cache decode at batch 128. A step whose output is
# already in $results (a warm machine's earlier call) is skipped, so calling this again goes on
# where the last call stopped. SWEEP_BF16, SWEEP_FP8 (points) and SWEEP_BF16_S, SWEEP_FP8_S
# (seconds) change the sweep. Results in $OUT/results.tar, rebuilt after each step.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
if [ ! -s $results/kernel-choice.json ]; then
    sweep() {  # cache, points, seconds
        timeout $3 python3 $here/decode_gap.py $results/kernel-sweep-$1.json --points "" \
            --sweep "$2" --sweep-kv $1 > $results/kernel-sweep-$1.log 2>&1
        echo "kernel sweep $1 rc=$?"
    }
    sweep bf16 "${SWEEP_BF16:-16x1024~,32x1024~,64x1024~,8x4096~}" ${SWEEP_BF16_S:-120}
    sweep fp8 "${SWEEP_FP8:-32x1024~,128x1024~}" ${SWEEP_FP8_S:-80}
    python3 $here/choose_kernel.py $results/kernel-choice.json $results/kernel-sweep-*.json \
        | tee $results/kernel-choice.log
    pack
fi
export TUNE="python3 $here/with_kernel.py $results/kernel-choice.json"
done_already 8b-bf16-$card || { OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 bf16; pack; }
done_already 8b-fp8-$card || { OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 fp8; pack; }
# The static FP8-cache decode at batch 128 and 4k (the fidelity issue's executor miss) with the
# chosen launch: the same kernel, one block a sequence.
[ -s $results/fp8kv-b128-c4096.json ] || { timeout 90 $TUNE measure --model llama-3.1-8b \
    --weights fp8 --kv-dtype fp8 --batch 128 --prompt 16 --context 4096 --json \
    > $results/fp8kv-b128-c4096.json 2> $results/fp8kv-b128-c4096.log; pack; }
for plan in bf16-eagle bf16-draft; do
    done_already 8b-${plan/-/-$card-} \
        || { OUT=$results PLAN_TIMEOUT=150 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
done_already 8b-bf16-$card-summarization-shared \
    || { OUT=$results PLAN_TIMEOUT=170 bash $here/run.sh 40 bf16-summarization-shared; pack; }
