#!/usr/bin/env bash
# Device calls after the decode kernel's occupancy was read from its sm_90 compile (NOTES.md,
# "The decode kernel's programs per SM"): the GPU tests first (the paged kernel's outputs
# against SDPA over gathered blocks, at the 8B's head shapes), then next_call7.sh's steps with
# small batches in the kernel sweep (1 and 4 sequences, where one wave of programs matters)
# and kernel_launch.VARIANTS as they are now. A step already done on a warm machine is
# skipped. Results in $OUT/results.tar, rebuilt after each step.
set -u
source studies/serving-validation/call_env.sh
if [ ! -s $results/gpu-tests.log ]; then
    timeout 240 python3 -m pytest -q -p no:cacheprovider --durations=8 tests/executor/test_gpu.py 2>&1 \
        | tail -n 30 > $results/gpu-tests.log
    tail -n 3 $results/gpu-tests.log
    pack
fi
SWEEP_BF16="1x1024,4x1024~,16x1024~,32x1024~,64x1024~,8x4096~" SWEEP_BF16_S=190 \
    SWEEP_FP8="4x1024~,32x1024~,128x1024~" SWEEP_FP8_S=110 bash $here/next_call7.sh
