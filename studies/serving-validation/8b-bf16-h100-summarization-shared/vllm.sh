#!/usr/bin/env bash
# llama-3.1-8b on 1 x h100-sxm: 1 replica(s) of tp=1 pp=1; vllm 0.33.0 (vllm/vllm-openai:v0.33.0); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 8b-bf16-h100-summarization-shared, trial 0); weights: meta-llama/Llama-3.1-8B-Instruct (bf16 weights as published)
# set before running:
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-8B-Instruct's licence
set -euo pipefail
cd "$(dirname "$0")"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0 vllm serve meta-llama/Llama-3.1-8B-Instruct --config vllm.yaml --port 8000
