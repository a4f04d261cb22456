#!/usr/bin/env bash
# llama-3.1-70b on 4 x h100-sxm: 1 replica(s) of tp=4 pp=1; trtllm 1.x
# written by rooftune 0.1.0 from plan.json (study llama-3.1-70b-8xh100-chat, trial 69)
# note: needs a ModelOpt pre-quantized checkpoint (FP8 W8A8; hf_quant_config.json beside config.json): TensorRT-LLM reads the quantization from the checkpoint and has no flag for it, so pass that directory as the model
# note: trtllm-serve has no served-model-name option in this release: clients use the model path as the model name
set -euo pipefail
cd "$(dirname "$0")"
CUDA_VISIBLE_DEVICES=0,1,2,3 trtllm-serve meta-llama/Llama-3.1-70B --backend pytorch --host 0.0.0.0 --config trtllm.yaml --port 8000
