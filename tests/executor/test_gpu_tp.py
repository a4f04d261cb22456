"""Tensor parallelism on two GPUs gives the unsharded model's logits: torchrun starts two ranks,
each builds the TP 2 model and, for reference, the whole model from the same seed. Covers the
one-shot all-reduce (pushed by its own kernel at batch 3, by the row-parallel GEMVs at batch 1)
through a prefill, eager decode steps and CUDA-graph replays of a step."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

torch = pytest.importorskip("torch")

SCRIPT = """
    import torch
    from executor.engine import DecodeGraphs, build_model
    from executor.kernels import use_gemv
    from executor.parallel import init_distributed, push_from_gemv
    from tests.executor.conftest import tiny_spec

    rank, world = init_distributed()
    spec = tiny_spec(hidden_size=1024, num_attention_heads=8, num_key_value_heads=2,
                     head_dim=128, intermediate_size=2048, vocab_size=1024)

    def logits(batch, tp, push):
        model = build_model(spec, device="cuda", tp_rank=rank, tp_world_size=tp)
        push_from_gemv(use_gemv(model), enabled=push)
        assert tp == 1 or model.collectives.backend == "one-shot"
        tokens = torch.randint(0, spec.vocab_size, (batch, 12), device="cuda",
                               generator=torch.Generator("cuda").manual_seed(1))
        model.setup_caches(max_batch=batch, max_seq_length=32)
        outs = [model(tokens[:, :8], torch.arange(8, device="cuda"))[:, -1:]]
        for pos in (8, 9):
            step = tokens[:, pos:pos + 1]
            outs.append(model(step, torch.tensor([pos], device="cuda"), kv_length=pos + 1))
        graphs = DecodeGraphs(model)
        graphs.capture(batch, position=10, fixed_position=True)
        for _ in range(3):  # the same step again: each replay must give the same logits
            graphs.static_tokens[batch].copy_(tokens[:, 10:11])
            graphs.replay(batch)
            outs.append(graphs.logits[batch].clone())
        if tp > 1:
            model.collectives.one_shot.check()
        return torch.cat(outs, dim=1).float()

    for batch, push in ((1, True), (1, False), (3, True)):
        sharded, whole = logits(batch, 2, push), logits(batch, 1, False)
        error = ((sharded - whole).norm() / whole.norm()).item()
        if rank == 0:
            print("ERROR", batch, int(push), error, flush=True)
"""


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs"
)
def test_tp2_matches_the_whole_model_on_two_gpus(tmp_path):
    script = tmp_path / "tp2.py"
    script.write_text(textwrap.dedent(SCRIPT))
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    errors = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 3, done.stdout
    for batch, push, error in errors:
        assert float(error) < 2e-2, f"batch {batch}, GEMV push {push}: TP 2 off by {error}"
