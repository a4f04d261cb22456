#!/usr/bin/env bash
# llama-3.1-70b on 8 x h100-sxm: 1 replica(s) of tp=8 pp=1; trtllm 1.x (nvcr.io/nvidia/tensorrt-llm/release); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 70b-bf16-tp8, trial 14); weights: meta-llama/Llama-3.1-70B-Instruct (bf16 weights as published)
# set before running:
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-70B-Instruct's licence
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 trtllm-serve meta-llama/Llama-3.1-70B-Instruct --backend pytorch --host 0.0.0.0 --config trtllm.yaml --port 8000
