#!/usr/bin/env bash
# llama-3.1-70b on 16 x h100-sxm: 1 replica(s) of tp=8 pp=2; trtllm 1.x (nvcr.io/nvidia/tensorrt-llm/release); node 0 of 2, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 70b-bf16-tp8pp2-2nodes, trial 0); weights: meta-llama/Llama-3.1-70B-Instruct (bf16 weights as published)
# set before running:
#   REPLICA0_HOSTS: replica 0's nodes 0, 1 for mpirun, as HOST:SLOTS in order (e.g. node0:8,node1:8), reachable over ssh from node 0
#   HF_TOKEN: a Hugging Face token whose account accepted meta-llama/Llama-3.1-70B-Instruct's licence
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
: "${REPLICA0_HOSTS:?set REPLICA0_HOSTS (see the top of this script)}"
: "${HF_TOKEN:?set HF_TOKEN (see the top of this script)}"
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 mpirun -H "${REPLICA0_HOSTS:?set REPLICA0_HOSTS (see the top of this script)}" -np 16 -x CUDA_VISIBLE_DEVICES -x HF_TOKEN trtllm-llmapi-launch trtllm-serve meta-llama/Llama-3.1-70B-Instruct --backend pytorch --host 0.0.0.0 --config trtllm.yaml --port 8000
