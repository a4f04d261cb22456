"""A prompt chunk's attention over its cached prefix, on a GPU: the ways to run it, timed.

In the summarization plans (`h100-bound-2026-12-07/`) a first 2,048-token chunk ran as priced
(cuDNN's fused causal kernel), but each later chunk, which attends over its cached keys
through SDPA with a bottom-right causal bias (``executor.ragged._Chunk``), cost 7-8 ms more
per 2,048 keys of prefix where the model prices 3.5. This times, for Llama-3.1-8B's heads (32
query, 8 K/V, 128 wide; bf16) and chunks of ``L`` tokens over ``P`` cached ones:

- ``sdpa-lower-right``: what the executor runs (native GQA, PyTorch's choice of kernel);
- ``cudnn-mask``: cuDNN's kernel with the bottom-right mask as a boolean tensor;
- ``cudnn-split`` / ``flash-split``: the prefix (every query sees every key) and the chunk
  itself (causal, square, so top-left and bottom-right agree) attended apart on the kernel
  named, their outputs merged by their log-sum-exps, the way split-K flash decoding merges;
- ``executor-later-chunk``: what the executor now runs, ``executor.prefix_attention`` (the
  prefix rounded down to 1,024 keys, the rest in a bucketed square, copies included);
- ``cudnn-causal-square``: cuDNN over a first chunk of ``L + P`` tokens, the rate the model
  is calibrated to, for scale.

K/V are repeated to the query heads where the kernel wants that (inside the timing: the
executor would pay it). Each variant's output is compared with the first's; rates count the
useful work, 4 x head_dim x heads x (L x P + L (L + 1) / 2). Timed with CUDA events, 5
warm-ups, the median of 20.

    python3 studies/serving-validation/prefix_attention.py OUT.json
    python3 studies/serving-validation/prefix_attention.py --check   # the merge, on a CPU
"""

from __future__ import annotations

import json
import statistics
import sys

import torch
import torch.nn.functional as F

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
POINTS = ((2048, 2048), (2048, 4096), (2048, 6144), (512, 4096), (1500, 3300), (768, 4096),
          (1024, 4096), (1280, 4096), (1024, 2048))  # (chunk L, prefix P)


def merge(o1: torch.Tensor, lse1: torch.Tensor, o2: torch.Tensor, lse2: torch.Tensor):
    """Two attentions of the same queries over disjoint keys -> the attention over both:
    each output weighted by its share of the softmax's denominator, exp(lse)."""
    length = o1.shape[2]
    lse1 = lse1.reshape(*o1.shape[:2], -1)[..., :length, None].float()
    lse2 = lse2.reshape(*o2.shape[:2], -1)[..., :length, None].float()
    top = torch.maximum(lse1, lse2)
    w1, w2 = torch.exp(lse1 - top), torch.exp(lse2 - top)
    return ((o1.float() * w1 + o2.float() * w2) / (w1 + w2)).to(o1.dtype)


def split(attend, q, k, v, prefix: int) -> torch.Tensor:
    """The prefix's keys without a mask, the chunk's own keys causally, merged."""
    o1, lse1 = attend(q, k[:, :, :prefix], v[:, :, :prefix], False)
    o2, lse2 = attend(q, k[:, :, prefix:], v[:, :, prefix:], True)
    return merge(o1, lse1, o2, lse2)


def repeated(k, v, heads: int):
    group = heads // k.shape[1]
    return k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)


def cudnn_attend(q, k, v, causal: bool):
    out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal)
    return out[0], out[1]


def flash_attend(q, k, v, causal: bool):
    out = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, causal)
    return out[0], out[1]


def cpu_attend(q, k, v, causal: bool):
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)


def variants(length: int, prefix: int, device: str) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    total = length + prefix
    bias = causal_lower_right(length, total)
    mask = torch.ones(length, total, dtype=torch.bool, device=device).tril(prefix)

    def cudnn_mask(q, k, v):
        k, v = repeated(k, v, q.shape[1])
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

    def cudnn_split(q, k, v):
        return split(cudnn_attend, q, *repeated(k, v, q.shape[1]), prefix)

    def flash_split(q, k, v):
        return split(flash_attend, q, *repeated(k, v, q.shape[1]), prefix)

    laid_out = {}

    def executor_chunk(q, k, v):  # laid out once (an iteration's work), then a layer's call
        if "chunk" not in laid_out:
            from executor.prefix_attention import LaterChunk

            laid_out["out"] = torch.empty(length, HEADS, HEAD_DIM, device=device, dtype=q.dtype)
            laid_out["chunk"] = LaterChunk(q[0].transpose(0, 1), laid_out["out"], prefix,
                                           KV_HEADS, 128)  # fmt: skip
        laid_out["chunk"](k, v)
        return laid_out["out"].transpose(0, 1)[None]

    return {
        "sdpa-lower-right": lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, enable_gqa=True, attn_mask=bias
        ),
        "cudnn-mask": cudnn_mask,
        "cudnn-split": cudnn_split,
        "flash-split": flash_split,
        "executor-later-chunk": executor_chunk,
    }


def median_ms(fn, *args) -> float:
    for _ in range(5):
        fn(*args)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*args)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def inputs(length: int, prefix: int, device: str, dtype=torch.bfloat16):
    q = torch.randn(1, HEADS, length, HEAD_DIM, device=device, dtype=dtype)
    k, v = torch.randn(2, 1, KV_HEADS, length + prefix, HEAD_DIM, device=device, dtype=dtype)
    return q, k, v


def check() -> int:
    """The merge against SDPA's bottom-right causal attention, in float32 on the CPU."""
    torch.manual_seed(0)
    from torch.nn.attention.bias import causal_lower_right

    worst = 0.0
    for length, prefix in ((5, 7), (16, 48), (33, 1)):
        q, k, v = inputs(length, prefix, "cpu", torch.float32)
        want = F.scaled_dot_product_attention(
            q, k, v, enable_gqa=True, attn_mask=causal_lower_right(length, length + prefix)
        )
        got = split(cpu_attend, q, *repeated(k, v, HEADS), prefix)
        worst = max(worst, (got - want).abs().max().item())
    print(f"split and merged against bottom-right SDPA: max |difference| {worst:.2e}")
    return 0 if worst < 1e-5 else 1


def main() -> int:
    if sys.argv[1:] == ["--check"]:
        return check()
    torch.manual_seed(0)
    rows = []
    for length, prefix in POINTS:
        q, k, v = inputs(length, prefix, "cuda")
        useful = 4 * HEAD_DIM * HEADS * (length * prefix + length * (length + 1) / 2)
        row: dict = {"chunk": length, "prefix": prefix}
        reference = None
        for name, fn in variants(length, prefix, "cuda").items():
            try:
                out = fn(q, k, v)
                reference = out if reference is None else reference
                ms = median_ms(fn, q, k, v)
                row[name] = {"ms": round(ms, 3), "tflops": round(useful / ms / 1e9),
                             "max_abs_diff": round((out - reference).abs().max().item(), 4)}  # fmt: skip
            except Exception as error:  # a kernel that refuses these shapes says so
                row[name] = {"error": f"{type(error).__name__}: {error}"[:200]}
        square = inputs(length + prefix, 0, "cuda")
        q2, (k2, v2) = square[0], repeated(*square[1:], HEADS)
        ms = median_ms(cudnn_attend, q2, k2, v2, True)
        whole = 4 * HEAD_DIM * HEADS * (length + prefix) * (length + prefix + 1) / 2
        row["cudnn-causal-square"] = {"ms": round(ms, 3), "tflops": round(whole / ms / 1e9)}
        rows.append(row)
        print(f"L={length} P={prefix}: " + "  ".join(
            f"{name} " + (f"{r['ms']} ms ({r['tflops']} TFLOP/s)" if "ms" in r else r["error"])
            for name, r in row.items() if isinstance(r, dict)), flush=True)  # fmt: skip
    with open(sys.argv[1], "w") as out:
        json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "heads": [HEADS, KV_HEADS, HEAD_DIM], "rows": rows}, out, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
