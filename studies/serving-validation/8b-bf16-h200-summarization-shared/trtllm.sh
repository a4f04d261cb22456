#!/usr/bin/env bash
# llama-3.1-8b on 1 x h200-sxm: 1 replica(s) of tp=1 pp=1; trtllm 1.x (nvcr.io/nvidia/tensorrt-llm/release); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 8b-bf16-h200-summarization-shared, trial 0); weights: meta-llama/Llama-3.1-8B-Instruct (bf16 weights as published)
# set before running:
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-8B-Instruct's licence
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0 trtllm-serve meta-llama/Llama-3.1-8B-Instruct --backend pytorch --host 0.0.0.0 --config trtllm.yaml --port 8000
