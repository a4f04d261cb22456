#!/usr/bin/env bash
# llama-3.1-70b on 4 x h100-sxm: 1 replica(s) of tp=4 pp=1; sglang 0.5.23
# written by rooftune 0.1.0 from plan.json (study llama-3.1-70b-8xh100-chat, trial 69)
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3 python -m sglang.launch_server --model-path meta-llama/Llama-3.1-70B --config sglang.yaml --port 8000
