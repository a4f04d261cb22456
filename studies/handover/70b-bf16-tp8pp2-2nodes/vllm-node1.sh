#!/usr/bin/env bash
# llama-3.1-70b on 16 x h100-sxm: 1 replica(s) of tp=8 pp=2; vllm 0.33.0 (vllm/vllm-openai:v0.33.0); node 1 of 2, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 70b-bf16-tp8pp2-2nodes, trial 0); weights: meta-llama/Llama-3.1-70B-Instruct (bf16 weights as published)
# set before running:
#   NODE0_ADDR: the address of node 0, replica 0's first node, as its other nodes reach it (they connect to port 29501)
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-70B-Instruct's licence
set -euo pipefail
cd "$(dirname "$0")"
: "${NODE0_ADDR:?set NODE0_ADDR (see the top of this script)}"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 vllm serve meta-llama/Llama-3.1-70B-Instruct --config vllm.yaml --port 8000 --nnodes 2 --node-rank 1 --master-addr "${NODE0_ADDR:?set NODE0_ADDR (see the top of this script)}" --master-port 29501 --headless
