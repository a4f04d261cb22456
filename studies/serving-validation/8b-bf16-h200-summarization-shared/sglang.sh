#!/usr/bin/env bash
# llama-3.1-8b on 1 x h200-sxm: 1 replica(s) of tp=1 pp=1; sglang 0.5.23 (lmsysorg/sglang:v0.5.23-cu130); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 8b-bf16-h200-summarization-shared, trial 0); weights: meta-llama/Llama-3.1-8B-Instruct (bf16 weights as published)
# set before running:
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-8B-Instruct's licence
set -euo pipefail
cd "$(dirname "$0")"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0 python -m sglang.launch_server --model-path meta-llama/Llama-3.1-8B-Instruct --config sglang.yaml --port 8000
