"""The one-shot all-reduce kernel in Triton's CPU interpreter, as rank 0 of two, with the peer's
half of each call (its rows pushed and its flags raised in our memory) written by the test.
Whether the flags really order NVLink traffic is checked on the GPUs, against NCCL, each time
``OneShotAllReduce.create`` runs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.executor.conftest import run_in_interpreter  # noqa: E402

SCRIPT = """
    import torch
    from executor.allreduce import SLOTS, OneShotAllReduce

    torch.manual_seed(0)
    H, R, W, rows = 48, 4, 2, 3
    size = OneShotAllReduce.buffer_bytes(hidden=H, max_rows=R, world_size=W, dtype=torch.float32)
    buffers = [torch.zeros(size, dtype=torch.uint8) for _ in range(W)]
    pointers = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64)
    me, peer = (
        OneShotAllReduce(buffer=buffers[rank], pointers=pointers, rank=rank, world_size=W,
                         hidden=H, max_rows=R, dtype=torch.float32)
        for rank in range(W)
    )

    def data(buffer):  # [slot, row, source rank, hidden]
        return buffer[: SLOTS * R * W * H * 4].view(torch.float32).view(SLOTS, R, W, H)

    my_flags = me.flags().view(SLOTS, R, W)
    mine, theirs = torch.randn(rows, H), torch.randn(rows, H)

    # Call 1, slot 1: a plain all-reduce. The peer has pushed its rows and raised its flags.
    data(buffers[0])[1, :rows, 1] = theirs
    my_flags[1, :rows, 1] = 1
    out = me.all_reduce(mine, slot=1)
    raised = peer.flags().view(SLOTS, R, W)[1, :rows, 0].tolist()
    pushed = (data(buffers[1])[1, :rows, 0] - mine).abs().max().item()
    print((out - (mine + theirs)).abs().max().item(), min(raised), max(raised), pushed,
          me.error.item())

    # Call 2, slot 0: fused with the residual add and RMSNorm.
    residual, weight = torch.randn(rows, H), torch.rand(H)
    data(buffers[0])[0, :rows, 1] = theirs
    my_flags[0, :rows, 1] = 1
    new_residual, normed = me.add_rms_norm(residual, mine, weight, 1e-5, slot=0)
    summed = residual + mine + theirs
    reference = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    print((new_residual - summed).abs().max().item(), (normed - reference).abs().max().item())

    # Call 3, slot 1 (epoch 2): the peer raised row 0 and 1 only; row 2 gives up, error set.
    me.spin_limit = 3
    my_flags[1, :2, 1] = 2
    me.all_reduce(mine, slot=1)
    print(me.error.item())
"""


def test_one_shot_all_reduce_in_interpreter():
    out = run_in_interpreter(SCRIPT)
    lines = [line.split() for line in out.strip().splitlines()]
    error, lowest_flag, highest_flag, pushed, error_flag = map(float, lines[0])
    assert error < 1e-6, "the sum of both ranks' rows"
    assert lowest_flag == highest_flag == 1, "epoch 1 raised in the peer's flags for every row"
    assert pushed == 0, "our rows pushed into the peer's buffer, in the part kept for rank 0"
    assert error_flag == 0
    residual_error, norm_error = map(float, lines[1])
    assert residual_error < 1e-5 and norm_error < 1e-5, "residual + sum, then RMSNorm"
    assert float(lines[2][0]) == 1, "a peer that never arrives sets the error flag, no hang"
