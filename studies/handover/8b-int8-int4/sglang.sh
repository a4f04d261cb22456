#!/usr/bin/env bash
# llama-3.1-8b on 1 x h100-sxm: 1 replica(s) of tp=1 pp=1; sglang 0.5.23 (lmsysorg/sglang:v0.5.23-cu130); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 8b-int8-int4, trial 0); weights: RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8 (INT8 weights per channel (GPTQ), activations per token, dynamic)
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0 python -m sglang.launch_server --model-path RedHatAI/Meta-Llama-3.1-8B-Instruct-quantized.w8a8 --config sglang.yaml --port 8000
