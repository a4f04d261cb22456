"""Hugging Face transformers' ``LlamaForCausalLM`` beside the executor, on the same GPU.

Same shapes, bf16, sdpa attention, its default dynamic KV cache, no compilation: the way the
library runs out of the box. First the executor's weights are loaded into it and the logits of
both compared; then both are timed at the same prefill and decode points and the ratio printed.
"""

from __future__ import annotations

import gc

import torch

from executor.engine import build_model, median, time_cuda
from simulator.data.specs import ModelSpec
from simulator.results import StepMeasurement

__all__ = ["bench_hf"]


def _log(*parts) -> None:
    print(*parts, flush=True)


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def _hf_model(spec: ModelSpec):
    from transformers import LlamaConfig, LlamaForCausalLM

    from simulator.data.hf_config import to_hf_config

    config = LlamaConfig(
        **{k: v for k, v in to_hf_config(spec).items() if k not in ("architectures", "model_type")}
    )
    config._attn_implementation = "sdpa"
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def bench_hf(spec: ModelSpec, ours: list[StepMeasurement], *, smoke: bool = False) -> dict:
    """Check HF against the executor on the same weights, then time HF at the executor's points."""
    executor_model = build_model(spec, seed=0)
    hf = _hf_model(spec)
    from executor.weights import to_hf_state_dict

    missing, unexpected = hf.load_state_dict(to_hf_state_dict(executor_model), strict=False)
    tokens = torch.randint(0, spec.vocab_size, (2, 64), device="cuda")
    ref = hf(input_ids=tokens).logits.float()
    got = executor_model(tokens).float()
    rel_error = ((got - ref).norm() / ref.norm()).item()
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    _log(
        f"executor vs HF logits, same weights: relative error {rel_error:.2e}, "
        f"top-1 agreement {top1:.3f} (missing {len(missing)}, unexpected {len(unexpected)})"
    )
    del executor_model
    _free()

    points = [
        (1, 0, 1024),
        (16, 0, 1024),
        (64, 0, 1024),
        (1, 0, 4096),
        (1, 512, 0),
        (1, 2048, 0),
        (1, 8192, 0),
    ]
    if smoke:
        points = [(1, 0, 512), (1, 256, 0)]
    records = []
    for batch, prompt, context in points:
        record = {
            "phase": "prefill" if prompt else "decode",
            "weights": "bf16",
            "tp": 1,
            "batch": batch,
            "prompt": prompt or None,
            "context": context or None,
        }
        try:
            if prompt:
                ids = torch.randint(0, spec.vocab_size, (batch, prompt), device="cuda")
                samples = time_cuda(
                    lambda: hf(input_ids=ids, logits_to_keep=1),  # noqa: B023
                    warmup=2,
                    iters=5,
                )
            else:
                ids = torch.randint(0, spec.vocab_size, (batch, context), device="cuda")
                cache = hf(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
                step_ids = torch.randint(0, spec.vocab_size, (batch, 1), device="cuda")
                samples = time_cuda(
                    lambda step_ids=step_ids, cache=cache: hf(
                        input_ids=step_ids, past_key_values=cache, use_cache=True
                    ),
                    warmup=3,
                    iters=15,
                )
                cache = None  # noqa: F841
            record.update(fits=True, time_s=median(samples), samples_s=samples)
        except torch.OutOfMemoryError as error:
            record.update(fits=False, reason=str(error).splitlines()[0][:160])
        _free()
        match = [
            r.time_s
            for r in ours
            if r.fits
            and r.time_s
            and r.phase == record["phase"]
            and r.weights == "bf16"
            and r.batch == batch
            and r.tp == 1
            and r.variant is None  # the engine as it serves, not a variant (graphs off, ...)
            and (r.prompt or 0) == prompt
            and (r.context or 0) == context
        ]
        if match and record.get("fits"):
            record["executor_time_s"] = match[0]
            record["speedup"] = record["time_s"] / match[0]
        records.append(record)
    _log(f"{'phase':>7} {'B':>4} {'P/C':>6} {'HF':>10} {'executor':>10} {'speedup':>8}")
    for r in records:
        if not r.get("fits"):
            _log(f"{r['phase']:>7} {r['batch']:>4}  HF infeasible")
            continue
        ex = r.get("executor_time_s")
        _log(
            f"{r['phase']:>7} {r['batch']:>4} {r['prompt'] or r['context']:>6} "
            f"{r['time_s'] * 1e3:8.2f}ms "
            + (f"{ex * 1e3:8.2f}ms {r['speedup']:7.2f}x" if ex else "   (no executor point)")
        )
    hf = None  # noqa: F841
    _free()
    return {
        "check": {
            "relative_error": rel_error,
            "top1_agreement": top1,
            "tokens": list(tokens.shape),
        },
        "points": records,
        "mode": "transformers LlamaForCausalLM, bf16, sdpa, eager, default dynamic cache",
    }
