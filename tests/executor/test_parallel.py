"""Tensor parallelism on the CPU: shard, run every shard, sum the partial outputs."""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from executor.engine import build_model  # noqa: E402
from executor.parallel import apply_tp, shard_model  # noqa: E402
from simulator.errors import ConfigError  # noqa: E402
from tests.executor.conftest import tiny_spec  # noqa: E402


@pytest.mark.parametrize("world_size", [2, 4])
def test_sharded_layer_partials_sum_to_unsharded(world_size):
    """Row-parallel partial outputs summed over ranks (what the all-reduce does) == the whole."""
    spec = tiny_spec(num_key_value_heads=4)
    whole = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    x = torch.randn(3, 5, spec.hidden_size)  # batch 3: every row must be reduced, not row 0
    cos, sin = whole.rope_cos[:5], whole.rope_sin[:5]
    layer = whole.layers[0]
    attention_ref = layer.attention(x, cos, sin, None, whole.kernels)
    mlp_ref = layer.mlp(x, whole.kernels)
    logits_ref = whole.lm_head(x)
    attention_sum = mlp_sum = 0
    logits_parts = []
    for rank in range(world_size):
        shard = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
        shard_model(shard, rank=rank, world_size=world_size)
        part = shard.layers[0]
        assert part.attention.num_heads == spec.num_attention_heads // world_size
        attention_sum = attention_sum + part.attention(x, cos, sin, None, shard.kernels)
        mlp_sum = mlp_sum + part.mlp(x, shard.kernels)
        logits_parts.append(shard.lm_head(x))
    torch.testing.assert_close(attention_sum, attention_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(mlp_sum, mlp_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(logits_parts, dim=-1), logits_ref)


def test_shard_then_unshard_round_trip():
    spec = tiny_spec(num_key_value_heads=4)
    whole = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    shards = []
    for rank in range(2):
        shard = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
        shards.append(shard_model(shard, rank=rank, world_size=2))
    q, kv = spec.q_size // 2, spec.kv_size // 2
    parts = [s.layers[1].attention.wqkv.weight.split([q, kv, kv]) for s in shards]
    rebuilt = torch.cat([torch.cat([p[i] for p in parts]) for i in range(3)])
    assert torch.equal(rebuilt, whole.layers[1].attention.wqkv.weight)
    down = torch.cat([s.layers[1].mlp.w_down.weight for s in shards], dim=1)
    assert torch.equal(down, whole.layers[1].mlp.w_down.weight)


@pytest.mark.parametrize("tied", [False, True])
def test_shard_built_block_by_block_equals_the_sliced_whole(tied):
    """build_model with TP builds random weights shard by shard (a 70B model does not fit on one
    GPU whole): every weight and the RoPE table equal the whole model's, sliced."""
    spec = tiny_spec(num_key_value_heads=4, tie_word_embeddings=tied)
    for rank in range(2):
        sliced = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
        shard_model(sliced, rank=rank, world_size=2)
        built = build_model(
            spec,
            device="cpu",
            dtype=torch.float32,
            fused_kernels=False,
            tp_rank=rank,
            tp_world_size=2,
        )
        expected, got = sliced.state_dict(), built.state_dict()
        assert expected.keys() == got.keys()
        for name, tensor in expected.items():
            assert got[name].device.type == "cpu", name
            assert torch.equal(got[name], tensor), name
        torch.testing.assert_close(built.rope_cos, sliced.rope_cos)
        assert built.layers[0].attention.num_heads == spec.num_attention_heads // 2


def test_tp_must_divide_heads():
    spec = tiny_spec()  # 2 KV heads
    model = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    with pytest.raises(ConfigError, match="num_key_value_heads"):
        shard_model(model, rank=0, world_size=4)


def test_apply_tp_in_process_equals_whole_model():
    """apply_tp with gloo over two CPU processes gives the unsharded model's logits, at batch 3,
    through a prefill and a cached decode step."""
    spec = tiny_spec(num_key_value_heads=4)
    whole = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    tokens = torch.randint(0, spec.vocab_size, (3, 6))
    ref = whole(tokens)
    results = _run_gloo(spec, tokens, world_size=2)
    for logits in results:
        torch.testing.assert_close(logits, ref, rtol=1e-4, atol=1e-4)


def _worker(rank, world_size, rendezvous_file, spec_json, tokens, queue):
    import torch.distributed as dist

    from simulator.data.specs import ModelSpec

    # A file rendezvous: no TCP port to race for with other tests on the machine.
    dist.init_process_group(
        "gloo", rank=rank, world_size=world_size, init_method=f"file://{rendezvous_file}"
    )
    spec = ModelSpec.model_validate_json(spec_json)
    model = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    apply_tp(model, rank=rank, world_size=world_size)
    logits = model(tokens)
    model.setup_caches(max_batch=3, max_seq_length=8)
    model(tokens[:, :5], torch.arange(5))
    step = model(tokens[:, 5:], torch.tensor([5]))
    queue.put((rank, torch.cat([logits[:, :5], step], dim=1)))
    dist.barrier()
    dist.destroy_process_group()


def _run_gloo(spec, tokens, world_size):
    import tempfile

    import torch.multiprocessing as mp

    context = mp.get_context("spawn")
    queue = context.Queue()
    rendezvous_file = os.path.join(tempfile.mkdtemp(prefix="tp-gloo-"), "rendezvous")
    procs = [
        context.Process(
            target=_worker,
            args=(r, world_size, rendezvous_file, spec.model_dump_json(), tokens, queue),
        )
        for r in range(world_size)
    ]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    return [results[r] for r in range(world_size)]
