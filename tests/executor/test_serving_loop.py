"""The serving loop on a tiny model (CPU): a ragged batch computes what one sequence at a time
computes, and the simulator's scheduler drives it through a whole workload.

The first test drives ``ServingExecutor`` with iterations written by hand: prompts in chunks
beside decodes, sequences at different lengths, blocks of 4 tokens, so that every path of
``executor.ragged`` runs (a first chunk, a later chunk over cached keys, decodes through their
block tables). Its greedy tokens must be those of the plain model run on each whole sequence.
"""

from __future__ import annotations

import ast
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from executor.engine import build_model  # noqa: E402
from executor.serving_loop import ServingExecutor, Step  # noqa: E402
from simulator.data.hardware import load_hardware  # noqa: E402
from simulator.data.specs import DeploymentConfig, ModelSpec  # noqa: E402
from simulator.data.workload import get_workload  # noqa: E402
from simulator.serving.simulate import simulate  # noqa: E402

TINY = ModelSpec(name="tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16, intermediate_size=128, vocab_size=97,
                 max_position_embeddings=512)  # fmt: skip


def tiny_model():
    return build_model(TINY, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)


def greedy(model, prompt: list[int], steps: int) -> list[int]:
    tokens = list(prompt)
    with torch.inference_mode():
        for _ in range(steps):
            logits = model(torch.tensor([tokens]))
            tokens.append(int(logits[0, -1].argmax()))
    return tokens[len(prompt) :]


def test_a_ragged_batch_samples_what_each_sequence_alone_does():
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    prompts = {rid: torch.randint(97, (n,), generator=gen).tolist()
               for rid, n in ((0, 10), (1, 5), (2, 3))}  # fmt: skip
    executor = ServingExecutor(
        model, num_blocks=32, block_size=4, max_seq_length=64,
        prompt_tokens=lambda rid, start, n: prompts[rid][start : start + n],
    )  # fmt: skip
    sampled: dict[int, list[int]] = {0: [], 1: [], 2: []}
    plan = [  # (decodes, chunks, requests whose prompt is done after it)
        ([], [(0, 0, 6), (1, 0, 5)], [1]),
        ([1], [(0, 6, 4)], [0]),
        ([0, 1], [(2, 0, 3)], [2]),
        ([0, 1, 2], [], []),
        ([2, 0], [], []),
    ]
    for decodes, chunks, completed in plan:
        executor(Step(decode=decodes, prefill=chunks))
        for rid in decodes + completed:
            sampled[rid].append(executor.last_token[rid])
    for rid, prompt in prompts.items():
        assert sampled[rid] == greedy(model, prompt, len(sampled[rid])), rid
    # The blocks each sequence holds cover its tokens, and a release returns them.
    assert executor.lengths == {0: 13, 1: 8, 2: 5}
    assert {rid: len(t) for rid, t in executor.tables.items()} == {0: 4, 1: 2, 2: 2}
    executor(Step(decode=[0], prefill=[], released=[1, 2]))
    assert len(executor.free) == 32 - 4


def test_the_simulators_scheduler_drives_the_executor_through_a_workload():
    model = tiny_model()
    config = DeploymentConfig(max_num_seqs=8, max_num_batched_tokens=96, max_model_len=512,
                              block_size=4)  # fmt: skip
    workload = get_workload("chat:isl=40,osl=12", num_requests=24, rate=2000.0, seed=2)
    hardware = load_hardware("h100-sxm")
    predicted = simulate(TINY, hardware, config, workload)
    blocks = 24 * (52 // 4 + 1)  # every request at once, a bound on what the scheduler admits
    executor = ServingExecutor(model, num_blocks=blocks, block_size=4, max_seq_length=512,
                               token_budget=96)  # fmt: skip
    forward, seen = model.forward, []

    def counting(tokens, *args, **kwargs):
        seen.append(tokens.shape[1])
        return forward(tokens, *args, **kwargs)

    model.forward = counting
    executor.warm_up()  # every path once, the whole token budget in one chunk, then no trace
    model.forward = forward
    assert max(seen) == 96, "the warm-up runs the largest iteration the scheduler may give"
    assert {1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96} <= set(seen), "and each size class"
    assert len(executor.free) == blocks and not executor.records and not executor.tables
    measured = simulate(TINY, hardware, config, workload, clock=executor)
    assert measured.prediction.fits and len(measured.finish_s) == 24
    assert (measured.finish_s > measured.first_token_s).all()
    # Every iteration the scheduler decided ran on the model, every token of every request.
    assert len(executor.records) == measured.prediction.iterations
    assert sum(r.tokens for r in executor.records) == 24 * (40 + 12 - 1)
    assert measured.limits.peak_running > 1 and max(r.decodes for r in executor.records) > 1
    assert any(r.decodes and r.chunks for r in executor.records)  # mixed iterations ran
    # The clock is the measured one: the run lasted what its iterations took.
    busy = sum(r.measured_s for r in executor.records)
    assert measured.prediction.duration_s >= busy * 0.999
    assert predicted.prediction.fits
    assert all(r.step_s > 0 and r.host_s >= 0 for r in executor.records)
    # Released blocks came back: only the requests of the last iteration still hold theirs.
    assert len(executor.tables) <= config.max_num_seqs


TRITON_DECODES = """
    import torch
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor.engine import build_model
    from executor.fused import Kernels
    from executor.serving_loop import ServingExecutor
    from simulator.data.specs import ModelSpec

    spec = ModelSpec(name="tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, intermediate_size=128, vocab_size=97,
                     max_position_embeddings=512)
    decode_splits.MIN_KEYS_PER_SPLIT = 8
    gen = torch.Generator().manual_seed(0)
    prompts = {0: torch.randint(97, (13,), generator=gen).tolist(),
               1: torch.randint(97, (6,), generator=gen).tolist()}
    outputs = []
    for triton in (False, True):
        model = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
        if triton:  # decodes through the paged one-kernel attention, the rest as before
            model.kernels = Kernels(decode_attention=attention.decode_attention,
                                    decode_attention_mode="triton")
        ex = ServingExecutor(model, num_blocks=16, block_size=4, max_seq_length=64,
                             prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n])
        out = []
        for decode, prefill in (([], [(0, 0, 9), (1, 0, 6)]), ([1], [(0, 9, 4)]),
                                ([0, 1], []), ([1, 0], [])):
            ex(type("It", (), dict(decode=decode, prefill=prefill, released=[],
                                   predicted_s=0.0))())
            out.append(sorted(ex.last_token.items()))
        outputs.append(out)
    print(int(outputs[0] == outputs[1]), outputs[1])
"""


@pytest.mark.parametrize(("by_work", "pieces"), [(False, False), (True, False), (True, True)])
def test_decodes_through_the_paged_kernel_sample_as_sdpa_does(by_work, pieces):
    """The glue between a ragged batch and the Triton decode kernel (its rows, RoPE tables,
    positions and block tables), in Triton's CPU interpreter: the same greedy tokens as the
    SDPA path, with either chunk rule (``decode_splits.BY_WORK``), and with the iterations
    that hold prompt chunks from piecewise graphs (stand-ins that rerun each piece), whose
    pieces rotate and store every token before the kernel reads them."""
    from tests.executor.conftest import run_in_interpreter

    script = TRITON_DECODES.replace(
        "decode_splits.MIN_KEYS", f"decode_splits.BY_WORK = {by_work}\n    decode_splits.MIN_KEYS"
    )
    if pieces:
        script = script.replace(
            "        out = []\n",
            "        if triton:\n"
            "            from executor.piecewise_graphs import PiecewiseGraphs\n"
            "            from tests.executor.conftest import rerun_capture\n"
            "            ex.piecewise = PiecewiseGraphs(model, max_tokens=16, scratch_block=16,\n"
            "                                           capture=rerun_capture)\n"
            "            ex.piecewise.capture()\n"
            "        out = []\n",
        )
        script = script.replace("    print(int(outputs[0] == outputs[1]), outputs[1])",
                                "    assert {r.path for r in ex.records} == {'piecewise'}\n"
                                "    print(int(outputs[0] == outputs[1]), outputs[1])")  # fmt: skip
        assert "PiecewiseGraphs" in script and "r.path" in script
    same, _ = run_in_interpreter(script).split(" ", 1)
    assert same == "1"


PLAN = [([], [(0, 0, 6), (1, 0, 5)]), ([1], [(0, 6, 4)]), ([0, 1], []), ([1, 0], [])]


def _tp_worker(rank, world_size, rendezvous_file, spec_json, prompts, queue):
    import torch.distributed as dist

    from executor.parallel import apply_tp

    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            init_method=f"file://{rendezvous_file}")  # fmt: skip
    spec = ModelSpec.model_validate_json(spec_json)
    model = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
    apply_tp(model, rank=rank, world_size=world_size)
    executor = ServingExecutor(model, num_blocks=16, block_size=4, max_seq_length=64,
                               prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n])  # fmt: skip
    executor.synchronize = lambda: None
    tokens, seconds = [], []
    for decode, prefill in PLAN:
        seconds.append(executor(Step(decode=decode, prefill=prefill)))
        tokens.append(sorted(executor.last_token.items()))
    queue.put((rank, tokens, seconds))  # each rank measured its own times; they must agree
    dist.barrier()
    dist.destroy_process_group()


def test_tensor_parallel_ranks_sample_the_same_tokens_on_one_clock():
    """Two gloo ranks, each a shard of the model with its own paged cache: the tokens of the
    unsharded model, and every rank's scheduler sees the same (slowest) iteration time."""
    import os
    import tempfile

    import torch.multiprocessing as mp

    from tests.executor.conftest import tiny_spec

    spec = tiny_spec(num_key_value_heads=4)
    gen = torch.Generator().manual_seed(0)
    prompts = {0: torch.randint(spec.vocab_size, (10,), generator=gen).tolist(),
               1: torch.randint(spec.vocab_size, (5,), generator=gen).tolist()}  # fmt: skip
    whole = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
    reference = ServingExecutor(whole, num_blocks=16, block_size=4, max_seq_length=64,
                                prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n])  # fmt: skip
    want = []
    for decode, prefill in PLAN:
        reference(Step(decode=decode, prefill=prefill))
        want.append(sorted(reference.last_token.items()))
    context = mp.get_context("spawn")
    queue = context.Queue()
    rendezvous = os.path.join(tempfile.mkdtemp(prefix="tp-serving-"), "rendezvous")
    procs = [context.Process(target=_tp_worker,
                             args=(r, 2, rendezvous, spec.model_dump_json(), prompts, queue))
             for r in range(2)]  # fmt: skip
    for proc in procs:
        proc.start()
    results = {rank: (tokens, seconds) for rank, tokens, seconds in
               (queue.get(timeout=120) for _ in procs)}  # fmt: skip
    for proc in procs:
        proc.join(timeout=60)
    assert results[0][0] == results[1][0] == want
    assert results[0][1] == results[1][1]  # one clock for both schedulers


def test_inputs_past_their_tables_are_named_on_the_host():
    """A position past the cache or a token past the vocabulary is one clear error before
    the model runs (on a GPU it would be a device-side assert inside a graph)."""
    executor = ServingExecutor(tiny_model(), num_blocks=64, block_size=4, max_seq_length=16,
                               prompt_tokens=lambda rid, s, n: [1] * n)  # fmt: skip
    with pytest.raises(RuntimeError, match="20 tokens need 5 blocks; a block table holds 4"):
        executor(Step(decode=[], prefill=[(0, 0, 20)]))
    bad = ServingExecutor(tiny_model(), num_blocks=64, block_size=4, max_seq_length=64,
                          prompt_tokens=lambda rid, s, n: [500] * n)  # fmt: skip
    with pytest.raises(RuntimeError, match="token id 500 outside the vocabulary of 97"):
        bad(Step(decode=[], prefill=[(0, 0, 4)]))


SPLIT_WIDTHS = """
    import torch
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor.engine import build_model
    from executor.fused import Kernels
    from executor.serving_loop import ServingExecutor
    from executor.serving_warmup import compile_split_widths
    from executor.speculative import DraftModel
    from simulator.data.specs import ModelSpec

    spec = ModelSpec(name="tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, intermediate_size=128, vocab_size=97,
                     max_position_embeddings=512)
    calls = []
    kernel = attention.decode_attention

    def recorded(qkv, cos, sin, positions, cache, kv_length, heads, **launch):
        calls.append((qkv.shape[1], decode_splits.split_width(qkv.shape[0], 2, kv_length)))
        return kernel(qkv, cos, sin, positions, cache, kv_length, heads, **launch)

    def tiny():
        model = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
        model.kernels = Kernels(decode_attention=recorded, decode_attention_mode="triton")
        return model

    model = tiny()
    ex = ServingExecutor(model, num_blocks=8, block_size=4, max_seq_length=500,
                         drafter=DraftModel(tiny(), 2))
    caches = [layer.attention.kv_cache for layer in model.layers]
    held = [(c.k[:-1].clone(), c.v[:-1].clone()) for c in caches]
    compile_split_widths(ex)
    untouched = all(torch.equal(c.k[:-1], k) and torch.equal(c.v[:-1], v)
                    for c, (k, v) in zip(caches, held))
    print(int(untouched), sorted(set(calls)))
"""


def test_the_warm_up_compiles_every_split_width_in_the_scratch_block():
    """Before a timed run the paged decode kernel meets each split-merge width it can (one
    compile each), for the target's query counts (1, and a verify's g + 1) and a draft step's
    (1 and 2), writing only into the scratch block no request holds."""
    from tests.executor.conftest import run_in_interpreter

    untouched, calls = run_in_interpreter(SPLIT_WIDTHS).split(" ", 1)
    assert untouched == "1"
    met = ast.literal_eval(calls)  # [(query, split width), ...]
    widths = {1, 2, 4, 8}  # 500 + 2 keys at 64 a chunk: at most 8 chunks (one sequence)
    expected = {(q, w) for q in (1, 2, 3) for w in widths}  # target 1, 3; draft 1, 2
    assert set(met) == expected


def test_a_kernel_compiled_inside_an_iteration_is_counted_there():
    """A Triton compile (about a second) inside a timed iteration is the executor's outlier:
    the iteration's record counts it, through Triton's post-compile hook."""
    knobs = pytest.importorskip("triton.knobs")
    model = tiny_model()
    executor = ServingExecutor(model, num_blocks=16, block_size=4, max_seq_length=64)
    forward = model.forward
    kernel = SimpleNamespace(name="_decode_kernel")

    def compiling(*args, **kwargs):
        knobs.runtime.jit_post_compile_hook(key=0, repr="kernel", fn=kernel, compile={},
                                            is_manual_warmup=False, already_compiled=False)  # fmt: skip
        return forward(*args, **kwargs)

    executor(Step(decode=[], prefill=[(0, 0, 5)]))
    model.forward = compiling
    executor(Step(decode=[0], prefill=[]))
    model.forward = forward
    executor(Step(decode=[0], prefill=[]))
    assert [r.compiles for r in executor.records] == [0, 1, 0]
    assert [r.compiled for r in executor.records] == [(), ("_decode_kernel",), ()]


def test_the_warm_up_token_counts_step_by_half_again_up_to_the_budget():
    from executor.serving_warmup import token_counts

    assert token_counts(100) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 100]
    assert token_counts(4096)[-4:] == [1536, 2048, 3072, 4096]
    assert token_counts(1) == [1] and token_counts(0) == []
    with_buckets = token_counts(600, bucket=128)
    assert {128, 256, 384, 512} <= set(with_buckets) and with_buckets[-1] == 600
    assert with_buckets == sorted(set(with_buckets))


@pytest.mark.parametrize("length", [1, 37, 128, 200])
def test_a_first_chunk_padded_to_its_bucket_attends_exactly_as_unpadded(length):
    """Zero keys appended after the last real one are never seen under the causal mask; and the
    padded copy, laid out once an iteration, takes each layer's rows afresh."""
    from executor.ragged import _Chunk

    torch.manual_seed(length)
    qkv = torch.randn(1, length + 3, 8 + 2 * 2, 16)  # 3 decodes' rows, then the chunk
    chunk = (3, length, 0, 0)
    exact, padded = (torch.zeros(1, length + 3, 8 * 16) for _ in range(2))
    attends = [_Chunk(qkv, exact, chunk, 8, 2, "flash", bucket=1),
               _Chunk(qkv, padded, chunk, 8, 2, "flash", bucket=128)]  # fmt: skip
    assert attends[1].padded is None if length == 128 else attends[1].padded.shape[0] % 128 == 0
    for _layer in range(2):
        qkv.normal_()  # the next layer's q, k and v in the same buffer
        for attend in attends:
            attend(None, None)
        q, k, v = qkv[0, 3:].transpose(0, 1)[None].split([8, 2, 2], dim=1)
        reference = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        torch.testing.assert_close(exact[0, 3:], reference[0].transpose(0, 1).reshape(length, -1))
        torch.testing.assert_close(padded, exact)
        assert not exact[0, :3].any()  # the decodes' rows are not the chunk's


def test_an_iterations_inputs_go_over_in_one_copy_each_aligned_for_triton():
    """``to_device`` packs the arrays into one copy; each comes back whole, int64, and starting
    on a 16-byte boundary (Triton compiles a kernel again for a pointer that does not)."""
    import numpy as np

    from executor.ragged import to_device

    arrays = [np.arange(5), np.arange(6).reshape(2, 3) * 7, np.asarray([3], dtype=np.int32),
              np.arange(0), np.arange(9) - 4]  # fmt: skip
    copied = to_device(torch.device("cpu"), *arrays)
    for array, tensor in zip(arrays, copied, strict=True):
        assert tensor.dtype == torch.int64 and tensor.tolist() == array.ravel().tolist()
        assert tensor.data_ptr() % 16 == 0
    assert len({t.untyped_storage().data_ptr() for t in copied}) == 1  # one allocation
