"""What the host spends to issue each kind of launch a serving iteration makes, on a GPU.

Eager iterations of the serving loop were issued in 24-29 ms whatever their size, and its
piecewise iterations in about 10 (`h100-capture-2026-12-07/`): the host's work, not the GPU's,
set them. This times, per call, with inputs small enough that the GPU never holds the host
back (``executor.points.host_seconds_per_call``: the median of 21 rounds of 50 calls): a
small PyTorch op, a bf16 GEMM of 16 rows (cuBLAS), the serving loop's Triton kernels (add +
RMSNorm, SiLU x mul, RoPE with the paged store, the paged decode attention laid out once and
launched), SDPA over a 128-token first chunk (cuDNN, as the loop pads it), a CUDA graph's
replay of one small op, a whole layer's attention laid out once (``IterationAttention``, 8
decodes and a 16-token chunk at Llama-3.1-8B's head shapes), and the eager serving iteration
of that batch through Llama-3.1-8B cut to one layer and to three, eagerly and from piecewise
graphs (half their difference is a layer's host work on that path). Each row with a Triton
launch is timed twice: launched as the executor does (``executor.triton_launch``, the
arguments bound once), and through Triton's own binding each call ("[through Triton]"); for
the decode kernel and add + RMSNorm, Triton's launcher alone as well (what a bound launch
keeps).
Prints microseconds per call and one JSON line.

    python3 studies/serving-validation/host_launches.py [OUT.json]
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from executor import decode_attention, elementwise, triton_launch
from executor.engine import build_model
from executor.fused import Kernels, causal_attention
from executor.kv_cache import PagedKVCache
from executor.piecewise_graphs import PiecewiseGraphs
from executor.points import host_seconds_per_call
from executor.ragged import IterationAttention, RaggedBatch, setup_paged_caches
from simulator.data.models import get_model

HEADS, KV_HEADS, D, BLOCK = 32, 8, 128, 16


def launcher_alone(kernel, call):
    """``kernel``'s compiled launcher, called with the arguments ``call`` hands it once bound
    (``executor.triton_launch``), or None where nothing is bound (Triton's interpreter)."""
    entries = triton_launch._bound.get(kernel, {})
    bound = {key: entry for key, entry in entries.items() if isinstance(entry, tuple)}
    recorded: list = []
    for key, entry in bound.items():
        entries[key] = (lambda *arguments: recorded.append(arguments), *entry[1:])
    call()
    entries.update(bound)
    if not recorded:
        return None
    run = next(iter(bound.values()))[0]
    return lambda: run(*recorded[0])


def main() -> int:
    # On a CPU (a dry run, with TRITON_INTERPRET=1) everything but the graph runs, slowly.
    device, bf16 = "cuda" if torch.cuda.is_available() else "cpu", torch.bfloat16
    a, b = torch.ones(1024, device=device), torch.ones(1024, device=device)
    out = torch.empty_like(a)
    x, w = (
        torch.randn(16, 4096, device=device, dtype=bf16),
        torch.randn(4096, 4096, device=device, dtype=bf16),
    )
    hidden = torch.randn(16, 4096, device=device, dtype=bf16)
    norm = torch.ones(4096, device=device, dtype=bf16)
    gate_up = torch.randn(16, 2 * 14336, device=device, dtype=bf16)
    cache = PagedKVCache(64, KV_HEADS, BLOCK, D, bf16, device)
    tokens = 8 + 16

    def with_chunk(length: int) -> RaggedBatch:
        """8 decodes at position 100, then a first chunk of ``length`` tokens."""
        positions = torch.cat([torch.full((8,), 100), torch.arange(length)]).to(device)
        return RaggedBatch(positions=positions, blocks=positions // BLOCK,
                           offsets=positions % BLOCK,
                           tables=torch.arange(72, device=device).view(9, 8) % 64, decodes=8,
                           chunks=[(8, length, 8, 0)], sample_rows=positions[:1] * 0,
                           max_length=max(101, length))  # fmt: skip

    batch = with_chunk(16)
    positions = batch.positions
    qkv = torch.randn(1, tokens, HEADS + 2 * KV_HEADS, D, device=device, dtype=bf16)
    rope = torch.randn(tokens, D, device=device, dtype=bf16)
    attended = torch.empty(1, tokens, HEADS * D, device=device, dtype=bf16)
    kernels = Kernels.compiled()
    attention = type("Attention", (), {"num_heads": HEADS, "num_kv_heads": KV_HEADS,
                                       "head_dim": D, "kv_cache": cache})()  # fmt: skip
    decode = decode_attention.prepare(qkv[0, :8, None], rope[:8], rope[:8], positions[:8], cache,
                                      101, HEADS, block_table=batch.tables[:8],
                                      out=attended[0, :8].view(8, 1, HEADS * D))  # fmt: skip
    chunk = torch.randn(1, HEADS, 128, D, device=device, dtype=bf16)
    replay = None
    if device == "cuda":
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            torch.add(a, b, out=out)
        replay = graph.replay
    layer = IterationAttention(attention, qkv, rope, rope, batch, kernels, out=attended)

    def iteration(layers: int, piecewise: bool = False, chunks: tuple[int, ...] = ()):
        """The batch's iteration through Llama-3.1-8B cut to ``layers`` layers: eagerly, or
        from piecewise graphs (all but attention replayed) as the serving loop runs it. With
        ``chunks``, eagerly with a first chunk of each of those lengths in turn (a new shape a
        call, as a serving run's iterations above the graphs' sizes are)."""
        spec = get_model("llama-3.1-8b").model_copy(update={"num_hidden_layers": layers})
        model = build_model(spec, device=device, dtype=bf16, fused_kernels=device == "cuda")
        setup_paged_caches(model, num_blocks=64, block_size=BLOCK, max_seq_length=1024)
        ids = torch.randint(1000, (1, tokens), device=device)
        if chunks:
            turns = itertools.cycle([(torch.randint(1000, (1, 8 + n), device=device),
                                      with_chunk(n)) for n in chunks])  # fmt: skip

            def next_shape():
                token_ids, chunked = next(turns)
                return model(token_ids, ragged=chunked)

            return next_shape
        if not piecewise:
            return lambda: model(ids, ragged=batch)
        pieces = PiecewiseGraphs(model, max_tokens=64, scratch_block=63)
        try:
            pieces.capture()
        except Exception as error:  # noqa: BLE001 - the other rows are still worth timing
            print(f"piecewise graphs not captured: {error}", flush=True)
            return None
        return lambda: pieces.run(ids, batch)

    long = tuple(range(500, 564))
    calls = {
        "torch add (1,024)": lambda: torch.add(a, b, out=out),
        "F.linear 16x4096x4096": lambda: F.linear(x, w),
        "Triton add_rms_norm": lambda: elementwise.add_rms_norm(hidden, x, norm, 1e-5),
        "Triton silu_and_mul": lambda: elementwise.silu_and_mul(gate_up),
        "Triton rope_cache (paged)": lambda: elementwise.rope_cache(
            qkv[:, 8:], rope[8:], rope[8:], HEADS, KV_HEADS, cache, batch.offsets[8:],
            blocks=batch.blocks[8:]),
        "decode kernel, laid out": lambda: decode(cache),
        "SDPA causal 128 (first chunk)": lambda: causal_attention(chunk, chunk[:, :KV_HEADS],
                                                                  chunk[:, :KV_HEADS]),
        "CUDA graph replay": replay,
        "a layer's attention, laid out": lambda: layer(attention),
        "eager iteration, 1 layer": iteration(1) if device == "cuda" else None,
        "eager iteration, 3 layers": iteration(3) if device == "cuda" else None,
        "piecewise iteration, 1 layer": iteration(1, True) if device == "cuda" else None,
        "piecewise iteration, 3 layers": iteration(3, True) if device == "cuda" else None,
        "eager iteration, 1 layer, 500-563": iteration(1, chunks=long) if device == "cuda" else None,
        "eager iteration, 3 layers, 500-563": iteration(3, chunks=long) if device == "cuda" else None,
    }  # fmt: skip
    result = {}
    untouched = ("torch add", "F.linear", "SDPA", "CUDA graph")  # no Triton launch in them
    with torch.inference_mode():
        for name, call in calls.items():
            if call is None:
                continue
            # Ten iterations a round keep the GPU's queue of launches short of full, where
            # the host would wait on the GPU.
            per_round = 10 if "iteration" in name else 50
            repeats = {"calls": per_round} if device == "cuda" else {"calls": 2, "rounds": 3}
            # Triton's launches bound once (executor.triton_launch), then through Triton's own
            # binding each call, as before.
            modes = (True,) if name.startswith(untouched) else (True, False)
            for bound in modes:
                triton_launch.ENABLED = bound
                label = name if bound else f"{name} [through Triton]"
                result[label] = round(1e6 * host_seconds_per_call(call, **repeats), 1)
                print(f"{label:44s} {result[label]:7.1f} us a call", flush=True)
            triton_launch.ENABLED = True
        # What stays of a bound launch: Triton's launcher (its C call and the driver's).
        for name, kernel in (("decode kernel, laid out", decode_attention._decode_kernel),
                             ("Triton add_rms_norm", elementwise._add_rms_norm_kernel)):  # fmt: skip
            alone = launcher_alone(kernel, calls[name])
            if alone is not None:
                label = f"{name}: its launcher alone"
                result[label] = round(1e6 * host_seconds_per_call(alone, calls=50), 1)
                print(f"{label:44s} {result[label]:7.1f} us a call", flush=True)
    for path, shapes in (("eager", ""), ("piecewise", ""), ("eager", ", 500-563")):
        for through in ("", " [through Triton]"):
            one, three = (
                f"{path} iteration, {n}{shapes}{through}" for n in ("1 layer", "3 layers")
            )
            if three in result:
                label = f"{path} layer{shapes}{through}"
                result[label] = round((result[three] - result[one]) / 2, 1)
                print(f"{label:44s} {result[label]:7.1f} us")
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    line = json.dumps({"device": name, "us_per_call": result})
    print(line)
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
