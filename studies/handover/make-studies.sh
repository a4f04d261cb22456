#!/usr/bin/env bash
# The hand-over studies: each directory is written by the real command below (rerun to redo).
set -euo pipefail
cd "$(dirname "$0")"
tune() { python -m tuner.cli "$@"; }
common=(--hardware h100-sxm --workload chat --slo ttft_p99=3s --slo tpot_p99=100ms --quiet)

# 70B in bf16 on 16 H100s with its one replica forced across two nodes (TP 8 x PP 2).
tune plan --model llama-3.1-70b --gpus 16 --rate 2 --allow-quant bf16 --tp 8 --pp 2 \
    --no-speculative "${common[@]}" --out 70b-bf16-tp8pp2-2nodes
# 405B in FP8 on up to 16 H100s.
tune plan --model llama-3.1-405b --gpus 16 --rate 2 --allow-quant fp8 "${common[@]}" \
    --out 405b-fp8-16xh100
# Llama 4 Scout with expert parallelism (EP 4 over TP 4).
tune plan --model llama-4-scout-17b-16e --gpus 8 --rate 4 --tp 4 --ep 4 "${common[@]}" \
    --out scout-ep4
# 8B allowed only INT8 W8A8 and INT4 weight-only.
tune plan --model llama-3.1-8b --gpus 2 --rate 4 --allow-quant int8,int4 "${common[@]}" \
    --out 8b-int8-int4
# 70B drafting with a small draft model (Llama-3.2-1B-Instruct).
tune plan --model llama-3.1-70b --gpus 8 --rate 4 --allow-quant fp8 --tp 4 --speculative draft \
    "${common[@]}" \
    --out 70b-draft-model
# Four data-parallel replicas of TP 4 on two nodes.
tune plan --model llama-3.1-70b --gpus 16 --rate 55 --allow-quant fp8 --tp 4 --pp 1 \
    --no-speculative "${common[@]}" --out 70b-4-replicas-2nodes
