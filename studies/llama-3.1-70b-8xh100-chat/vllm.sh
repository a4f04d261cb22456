#!/usr/bin/env bash
# llama-3.1-70b on 4 x h100-sxm: 1 replica(s) of tp=4 pp=1; vllm 0.33.0
# written by rooftune 0.1.0 from plan.json (study llama-3.1-70b-8xh100-chat, trial 69)
# note: vLLM warns that disabling chunked prefill is not officially supported
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3 vllm serve meta-llama/Llama-3.1-70B --config vllm.yaml --port 8000
