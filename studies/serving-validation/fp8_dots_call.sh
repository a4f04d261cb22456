#!/usr/bin/env bash
# One short device call: an FP8 cache's dots in float16 (decode_attention.FP8_AS_F16), checked
# and timed. The paged kernel's GPU tests (outputs against SDPA over gathered blocks, FP8 with
# bfloat16 and float16 dots among them), then the kernel alone with an FP8 cache at the
# defaults and with float16 dots (decode_gap.py's sweep over those two launches only).
# Results in $OUT/results.tar.
set -u
source studies/serving-validation/call_env.sh
timeout 90 python3 -m pytest -q -p no:cacheprovider tests/executor/test_gpu.py -k paged_decode \
    2>&1 | tail -n 15 > $results/gpu-paged.log
tail -n 2 $results/gpu-paged.log
pack
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
echo "sweep rc=$?"
grep '"us"' $results/kernel-sweep-fp8-dots.log | python3 -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    print(r['point'], r['launch'].get('fp8_as_f16'), round(r['us'], 1), round(r['gb_per_s']))"
pack
