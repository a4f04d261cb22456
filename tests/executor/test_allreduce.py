"""The one-shot all-reduce kernel in Triton's CPU interpreter, as rank 0 of two, with the peer's
half of each call (its rows pushed into our buffer) written by the test. Whether the data really
arrives over NVLink as the kernel expects is checked on the GPUs, against NCCL, each time
``OneShotAllReduce.create`` runs."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.executor.conftest import run_in_interpreter  # noqa: E402

SCRIPT = """
    import torch, triton
    from executor import kernels
    from executor.allreduce import OneShotAllReduce

    torch.manual_seed(0)
    H, R, W, rows = 48, 4, 2, 3
    size = OneShotAllReduce.buffer_bytes(hidden=H, max_rows=R, world_size=W, dtype=torch.float32)
    buffers = [torch.empty(size, dtype=torch.uint8) for _ in range(W)]
    pointers = torch.tensor([b.data_ptr() for b in buffers], dtype=torch.int64)
    me, peer = (
        OneShotAllReduce(buffer=buffers[rank], pointers=pointers, rank=rank, world_size=W,
                         hidden=H, max_rows=R, dtype=torch.float32)
        for rank in range(W)
    )
    ours, theirs_cells = me.cells(), peer.cells()  # [buffer, row, source rank, hidden]

    def unwritten(cells):
        return int(bool(((cells == 0) & torch.signbit(cells)).all()))

    mine, theirs = torch.randn(rows, H), torch.randn(rows, H)
    mine[0, 0] = -0.0
    print(unwritten(ours), unwritten(theirs_cells))

    # Call 0, buffer 0: a plain all-reduce. The peer has pushed its rows into our buffer.
    ours[0, :rows, 1] = theirs
    out = me.all_reduce(mine)
    pushed = theirs_cells[0, :rows, 0]
    print((out - (mine + theirs)).abs().max().item(), (pushed - mine).abs().max().item(),
          int(torch.signbit(pushed[0, 0])), me.counters.tolist(), me.error.item())

    # Call 1, buffer 1: fused with the residual add and RMSNorm; it clears our cells of call 0.
    residual, weight = torch.randn(rows, H), torch.rand(H)
    ours[1, :rows, 1] = theirs
    new_residual, normed = me.add_rms_norm(residual, mine, weight, 1e-5)
    summed = residual + mine + theirs
    reference = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-5) * weight
    print((new_residual - summed).abs().max().item(), (normed - reference).abs().max().item(),
          unwritten(ours[0, :rows, 1]))

    # Call 2, buffer 2, one row: a row-parallel GEMV pushes its output, the all-reduce only
    # waits for the peer's (it does not push again: the marker stays).
    x, w = torch.randn(1, 32), torch.randn(H, 32)
    y = torch.empty(1, H)
    kernels._gemv_kernel.fn[(triton.cdiv(H, 8),)](
        x, w, y, y, H, 32, w.stride(0), pointers, me.counters, R,
        HAS_SCALE=False, SCALE_PER_ROW=False, GATED=False, PUSH=True, RANK=0, WORLD=W,
        USE_PDL=False, BLOCK_N=8, BLOCK_K=32)
    from_gemv = (theirs_cells[2, 0, 0] - y[0]).abs().max().item()
    me.mark_pushed(y)
    theirs_cells[2, 0, 0, 0] = 123.0
    ours[2, 0, 1] = theirs[0]
    out = me.all_reduce(y)
    print(from_gemv, (out - (y + theirs[:1])).abs().max().item(),
          theirs_cells[2, 0, 0, 0].item(), (y - x @ w.T).abs().max().item())

    # Call 3: row 0 (buffer 0) has its peer row; rows 1 and 2 (buffer 2) never get theirs: the
    # wait gives up and sets the error flag, no hang.
    me.spin_limit = 3
    ours[0, 0, 1] = theirs[0]
    out = me.all_reduce(mine)
    print((out[0] - (mine[0] + theirs[0])).abs().max().item(), me.error.item(),
          unwritten(ours[2, 0, 1]))
"""


def test_one_shot_all_reduce_in_interpreter():
    out = run_in_interpreter(SCRIPT)
    lines = [line.replace("[", "").replace("]", "").replace(",", "") for line in out.splitlines()]
    lines = [[float(value) for value in line.split()] for line in lines if line.strip()]
    assert lines[0] == [1, 1], "every cell of a new buffer is unwritten (-0.0)"
    error, pushed, negative_zero, *counters, error_flag = lines[1]
    assert error < 1e-6, "the sum of both ranks' rows"
    assert pushed == 0, "our rows pushed into the peer's buffer, in the part kept for rank 0"
    assert negative_zero == 0, "a -0.0 of ours arrives as +0.0: -0.0 only ever means unwritten"
    assert counters == [1, 1, 1, 0], "one call counted for each row it reduced"
    assert error_flag == 0
    residual_error, norm_error, cleared = lines[2]
    assert residual_error < 1e-5 and norm_error < 1e-5, "residual + sum, then RMSNorm"
    assert cleared == 1, "the previous call's cells are unwritten again"
    from_gemv, gemv_sum_error, marker, gemv_error = lines[3]
    assert from_gemv == 0, "the GEMV stored its output in the peer's buffer, in this call's cell"
    assert gemv_sum_error < 1e-6, "the all-reduce summed the GEMV's output and the peer's"
    assert marker == 123.0, "after the GEMV's push, the all-reduce does not push again"
    assert gemv_error < 1e-4, "the GEMV's own output is still x @ w.T"
    row0_error, error_flag, cleared = lines[4]
    assert row0_error < 1e-6, "a row whose peer arrived is reduced"
    assert error_flag == 1, "a peer that never arrives sets the error flag, no hang"
    assert cleared == 1
