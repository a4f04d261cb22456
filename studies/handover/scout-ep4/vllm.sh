#!/usr/bin/env bash
# llama-4-scout-17b-16e on 4 x h100-sxm: 1 replica(s) of tp=4 pp=1; vllm 0.33.0 (vllm/vllm-openai:v0.33.0); node 0 of 1, replica(s) 0
# written by rooftune 0.1.0 from plan.json (study scout-ep4, trial 12); weights: RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic (FP8 weights and activations, activations dynamic (llm-compressor))
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3 vllm serve RedHatAI/Llama-4-Scout-17B-16E-Instruct-FP8-dynamic --config vllm.yaml --port 8000
