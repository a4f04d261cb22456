#!/usr/bin/env bash
# The calls after the decode graphs took vLLM's capture sizes (NOTES.md, "Next"), ordered so
# that what matters most lands first; call it again on a warm machine and it goes on where it
# stopped (a step whose output is in $results is skipped). The new GPU tests (every capture
# size against eager iterations; the paged kernel with an FP8 cache's dots in float16), the FP8
# cache's kernel at the defaults and with float16 dots (the choice), the bf16 plan's three
# loads with each iteration's issue time, one sequence of 1,024 keys under the profiler (the
# decode offset and the host's waits per chunk iteration), then the FP8, EAGLE, draft and
# shared-summarization plans. Results in $OUT/results.tar, rebuilt after each step.
set -u
source studies/serving-validation/call_env.sh
done_already() { grep -q "^rc=" "$results/$1/traffic.log" 2>/dev/null; }
if [ ! -s $results/gpu-tests.log ]; then
    timeout 150 python3 -m pytest -q -p no:cacheprovider --durations=5 tests/executor/test_gpu.py \
        -k "every_bucket or paged_decode" 2>&1 | tail -n 30 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
if [ ! -s $results/kernel-choice.json ]; then
    timeout 90 python3 - $results/kernel-sweep-fp8-dots.json > $results/kernel-sweep-fp8-dots.log 2>&1 <<'PY'
import sys
sys.path.insert(0, "studies/serving-validation")
import kernel_launch
kernel_launch.VARIANTS[:] = [{}, {"fp8_as_f16": True}]
sys.argv = ["decode_gap.py", sys.argv[1], "--points", "", "--sweep-kv", "fp8",
            "--sweep", "4x1024~,32x1024~,128x1024~"]
import decode_gap
sys.exit(decode_gap.main())
PY
    echo "fp8 dots sweep rc=$?"
    python3 $here/choose_kernel.py $results/kernel-choice.json $results/kernel-sweep-fp8-dots.json \
        | tee $results/kernel-choice.log
    pack
fi
export TUNE="python3 $here/with_kernel.py $results/kernel-choice.json"
done_already 8b-bf16-$card || { OUT=$results PLAN_TIMEOUT=160 bash $here/run.sh 100 bf16; pack; }
if [ ! -s $results/decode-gap-b1.json ]; then
    timeout 100 python3 $here/decode_gap.py $results/decode-gap-b1.json --points 1x1024 \
        --splits work --sweep "" > $results/decode-gap-b1.log 2>&1
    echo "decode gap rc=$?"
    pack
fi
done_already 8b-fp8-$card || { OUT=$results PLAN_TIMEOUT=150 bash $here/run.sh 100 fp8; pack; }
[ -s $results/fp8kv-b128-c4096.json ] || { timeout 90 $TUNE measure --model llama-3.1-8b \
    --weights fp8 --kv-dtype fp8 --batch 128 --prompt 16 --context 4096 --json \
    > $results/fp8kv-b128-c4096.json 2> $results/fp8kv-b128-c4096.log; pack; }
for plan in bf16-eagle bf16-draft; do
    done_already 8b-${plan/-/-$card-} \
        || { OUT=$results PLAN_TIMEOUT=150 LOADS=plan bash $here/run.sh 100 $plan; pack; }
done
done_already 8b-bf16-$card-summarization-shared \
    || { OUT=$results PLAN_TIMEOUT=170 bash $here/run.sh 40 bf16-summarization-shared; pack; }
