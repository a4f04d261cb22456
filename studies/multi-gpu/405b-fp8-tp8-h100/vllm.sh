#!/usr/bin/env bash
# llama-3.1-405b on 8 x h100-sxm: 1 replica(s) of tp=8 pp=1; vllm 0.33.0 (vllm/vllm-openai:v0.33.0); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 405b-fp8-tp8-h100, trial 18); weights: RedHatAI/Meta-Llama-3.1-405B-Instruct-FP8-dynamic (FP8 weights per channel, activations per token, dynamic (llm-compressor))
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 vllm serve RedHatAI/Meta-Llama-3.1-405B-Instruct-FP8-dynamic --config vllm.yaml --port 8000
