#!/usr/bin/env bash
# llama-3.1-70b on 16 x h100-sxm: 1 replica(s) of tp=8 pp=2; trtllm 1.x (nvcr.io/nvidia/tensorrt-llm/release); node 1 of 2, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 70b-bf16-tp8pp2-2nodes, trial 0); weights: meta-llama/Llama-3.1-70B-Instruct (bf16 weights as published)
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
echo 'node 1 runs no process itself: node 0'"'"'s script starts its ranks'
