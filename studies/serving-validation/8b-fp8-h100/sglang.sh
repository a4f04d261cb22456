#!/usr/bin/env bash
# llama-3.1-8b on 1 x h100-sxm: 1 replica(s) of tp=1 pp=1; sglang 0.5.23 (lmsysorg/sglang:v0.5.23-cu130); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 8b-fp8-h100, trial 0); weights: RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic (FP8 weights per channel, activations per token, dynamic (llm-compressor))
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0 python -m sglang.launch_server --model-path RedHatAI/Meta-Llama-3.1-8B-Instruct-FP8-dynamic --config sglang.yaml --port 8000
