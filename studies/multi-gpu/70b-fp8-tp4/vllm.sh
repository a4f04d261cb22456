#!/usr/bin/env bash
# llama-3.1-70b on 4 x h100-sxm: 1 replica(s) of tp=4 pp=1; vllm 0.33.0 (vllm/vllm-openai:v0.33.0); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 70b-fp8-tp4, trial 18); weights: nvidia/Llama-3.1-70B-Instruct-FP8 (FP8 weights and activations, static per-tensor scales (Model Optimizer 0.15.1))
# note: the checkpoint's FP8 activation scales are static; the plan modelled dynamic per-token scaling, which costs a little more, so its predictions are conservative
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3 vllm serve nvidia/Llama-3.1-70B-Instruct-FP8 --config vllm.yaml --port 8000
