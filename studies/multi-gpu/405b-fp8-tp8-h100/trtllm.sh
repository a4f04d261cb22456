#!/usr/bin/env bash
# llama-3.1-405b on 8 x h100-sxm: 1 replica(s) of tp=8 pp=1; trtllm 1.x (nvcr.io/nvidia/tensorrt-llm/release); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study 405b-fp8-tp8-h100, trial 18); weights: nvidia/Llama-3.1-405B-Instruct-FP8 (FP8 weights and activations, static per-tensor scales (Model Optimizer 0.15.1))
# note: the checkpoint's FP8 activation scales are static; the plan modelled dynamic per-token scaling, which costs a little more, so its predictions are conservative
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 trtllm-serve nvidia/Llama-3.1-405B-Instruct-FP8 --backend pytorch --host 0.0.0.0 --config trtllm.yaml --port 8000
