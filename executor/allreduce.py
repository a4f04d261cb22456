"""A one-shot all-reduce for tensor-parallel decode, fused with the residual add and RMSNorm.

At small batch a TP decode step all-reduces one ``[batch, hidden]`` activation twice a layer:
kilobytes, where NCCL's protocol costs ~12 us each on NVLink (``studies/executor-h200``) and
the add + RMSNorm that follows is one more kernel. Here each all-reduce is one kernel, and the
data is its own signal (no flags, no memory fences):

1. every GPU stores its partial sum into each peer's buffer (stores over NVLink into memory that
   all GPUs of the group map, ``torch.distributed._symmetric_memory``; no multicast), in the
   part of the buffer kept for its rank;
2. a buffer cell not yet written holds -0.0 in every element, a value no partial sum carries
   (the writer turns -0.0 into +0.0, the same number). Each GPU polls its own buffer until no
   element of a peer's row is -0.0: that row has arrived, element by element, with no flag and
   no system-wide fence, so a reduction costs one NVLink crossing, not two;
3. it sums the rows in rank order (so every GPU gets bitwise the same result), then adds the
   residual and applies RMSNorm (or, for a plain all-reduce, writes the sum), and fills the
   cells of its previous call with -0.0 again.

Three buffers rotate, chosen by a per-row call counter kept in device memory (the kernel needs no
host input and replays inside a CUDA graph). A peer writes buffer ``n % 3`` in call ``n``; the
cells of call ``n - 1`` are cleared in call ``n``, and no peer writes them again before call
``n + 2``, which it reaches only after this GPU's call ``n + 1`` has pushed, after the clear.
One program handles one row (token), so rows never wait on each other. A wait that exceeds ~2^26
polls gives up and sets an error flag (``check()`` raises) instead of hanging the job.

For one token the row-parallel GEMV (``executor.kernels.gemv`` with ``push``) stores its outputs
into the peers' buffers itself, as each of its programs finishes; the all-reduce kernel then only
waits, sums and normalizes (``mark_pushed``). Messages over ``max_rows`` rows go to NCCL.
``OneShotAllReduce.create`` checks the kernel against NCCL once and returns None (with the reason
printed) when this machine cannot run it.

Measured on 2 x H100 (``studies/executor-h100/tp2-one-shot``): 2.6 us in a CUDA graph for one
4096-wide bf16 row, where NCCL takes 11 us and this kernel took 5 us with flags and 2-byte stores.
"""

from __future__ import annotations

import warnings

import torch

from executor import pdl
from executor.tritonlib import tl, triton

__all__ = ["OneShotAllReduce", "BUFFERS"]


BUFFERS = 3
SPIN_LIMIT = 1 << 26


if triton is not None:
    from executor.elementwise import add_rms_norm_row

    _BUFFERS = tl.constexpr(BUFFERS)

    @triton.jit
    def _unwritten(values):
        # True where an element still holds -0.0, the mark of a cell no peer has written.
        if values.dtype.primitive_bitwidth == 16:
            marked = values.to(tl.int16, bitcast=True) == -32768
        else:
            marked = values.to(tl.int32, bitcast=True) == -2147483648
        return marked

    @triton.jit
    def _unwritten_like(values):
        # A block of -0.0 shaped like `values`, made from its bits: tl.full(-0.0) would give
        # +0.0, as Triton builds any constant equal to zero as the null value.
        if values.dtype.primitive_bitwidth == 16:
            marks = tl.full(values.shape, -32768, tl.int16).to(values.dtype, bitcast=True)
        else:
            marks = tl.full(values.shape, -2147483648, tl.int32).to(values.dtype, bitcast=True)
        return marks

    @triton.jit
    def _vectors(base, offsets, RUN: tl.constexpr):
        # base + offsets, for addresses into a mapped buffer. They come from memory, so Triton
        # cannot see that they are aligned and would move one element at a time (each its own
        # NVLink write). They are: buffers are 16-byte aligned, cells whole multiples of 16
        # bytes (`hidden` a multiple of 8), and `offsets` run contiguously in aligned groups of
        # RUN elements. (The hint must name a value made here: on an argument it is lost.)
        pointers = base + offsets
        size: tl.constexpr = base.dtype.element_ty.primitive_bitwidth // 8
        return tl.max_contiguous(tl.multiple_of(pointers, RUN * size), RUN)

    @triton.jit
    def push_row(
        values,
        cols,
        ok,
        buffers_ptr,
        counters_ptr,
        row,
        hidden,
        max_rows,
        RANK: tl.constexpr,
        WORLD: tl.constexpr,
        RUN: tl.constexpr,
    ):
        """Store ``values`` (columns ``cols`` of ``row``, contiguous in aligned runs of ``RUN``)
        into every peer's buffer, in the cell of this call and the part kept for this rank.
        Shared with the GEMV's epilogue."""
        cell = (tl.load(counters_ptr + row) % _BUFFERS) * max_rows + row
        values = tl.where(values == 0.0, 0.0, values).to(values.dtype)  # -0.0 marks "unwritten"
        for dst in tl.static_range(WORLD):
            if dst != RANK:
                theirs = tl.load(buffers_ptr + dst).to(tl.pointer_type(values.dtype))
                target = _vectors(theirs, (cell * WORLD + RANK) * hidden + cols, RUN)
                tl.store(target, values, mask=ok)

    @triton.jit
    def _one_shot_kernel(
        partial_ptr,
        buffers_ptr,
        counters_ptr,
        error_ptr,
        residual_ptr,
        weight_ptr,
        scale_ptr,
        out_residual_ptr,
        out_ptr,
        hidden,
        max_rows,
        eps,
        spin_limit,
        RANK: tl.constexpr,
        WORLD: tl.constexpr,
        PUSH: tl.constexpr,
        FUSE_NORM: tl.constexpr,
        TO_FP8: tl.constexpr,
        USE_PDL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        ok = cols < hidden
        dtype = partial_ptr.dtype.element_ty
        mine = tl.load(partial_ptr + row * hidden + cols, mask=ok, other=0.0)
        if PUSH:  # else the GEMV that made `partial` has pushed it already
            push_row(
                mine, cols, ok, buffers_ptr, counters_ptr, row, hidden, max_rows, RANK, WORLD, 8
            )

        count = tl.load(counters_ptr + row)
        cell = (count % _BUFFERS) * max_rows + row
        previous = ((count + _BUFFERS - 1) % _BUFFERS) * max_rows + row
        own = tl.load(buffers_ptr + RANK).to(tl.pointer_type(dtype))
        total = tl.zeros((BLOCK,), dtype=tl.float32)
        for peer in tl.static_range(WORLD):  # in rank order: the same sum on every GPU
            if peer == RANK:
                total += mine.to(tl.float32)
            else:
                pushed = _vectors(own, (cell * WORLD + peer) * hidden + cols, 8)
                theirs = tl.load(pushed, mask=ok, other=0.0, volatile=True)
                spins = 0
                while (tl.max(_unwritten(theirs).to(tl.int32), axis=0) > 0) & (spins < spin_limit):
                    theirs = tl.load(pushed, mask=ok, other=0.0, volatile=True)
                    spins += 1
                if tl.max(_unwritten(theirs).to(tl.int32), axis=0) > 0:
                    tl.store(error_ptr, 1)  # gave up: the peer never arrived
                total += theirs.to(tl.float32)
                # The previous call's cell from this peer: unwritten again, for call n + 2.
                stale = _vectors(own, (previous * WORLD + peer) * hidden + cols, 8)
                tl.store(stale, _unwritten_like(mine), mask=ok)
        tl.debug_barrier()  # every thread has read the counter before it moves on
        tl.store(counters_ptr + row, count + 1)

        reduced = total.to(dtype)
        if FUSE_NORM:  # as the unfused kernels round: the bf16 sum, then add and norm
            add_rms_norm_row(
                residual_ptr,
                reduced,
                weight_ptr,
                scale_ptr,
                out_residual_ptr,
                out_ptr,
                row,
                hidden,
                eps,
                TO_FP8,
                BLOCK,
            )
        else:
            tl.store(out_ptr + row * hidden + cols, reduced, mask=ok)


def _mark_unwritten(cells: torch.Tensor) -> None:
    """Fill with -0.0, set bit by bit (the sign bit alone), so no conversion can drop the sign."""
    as_int = {2: torch.int16, 4: torch.int32}[cells.element_size()]
    cells.view(as_int).fill_(torch.iinfo(as_int).min)


class OneShotAllReduce:
    """The fused one-shot all-reduce of one TP group, for ``[rows, hidden]`` activations of up
    to ``max_rows`` rows in ``dtype``.

    ``buffer`` is this GPU's mapped buffer (``buffer_bytes``: ``[BUFFERS, max_rows, world,
    hidden]`` values, a row per source rank); ``pointers`` the device addresses of every GPU's
    buffer, in rank order. ``create`` builds one over symmetric memory; tests build one over
    plain tensors to run the kernel in Triton's interpreter. The constructor marks this GPU's
    buffer unwritten (-0.0); every GPU of the group must be constructed before any calls."""

    def __init__(
        self,
        *,
        buffer: torch.Tensor,
        pointers: torch.Tensor,
        rank: int,
        world_size: int,
        hidden: int,
        max_rows: int,
        dtype: torch.dtype,
    ) -> None:
        self.buffer, self.pointers = buffer, pointers
        self.rank, self.world_size = rank, world_size
        self.hidden, self.max_rows, self.dtype = hidden, max_rows, dtype
        _mark_unwritten(self.cells())
        device = buffer.device
        self.counters = torch.zeros(max_rows, dtype=torch.int32, device=device)
        self.error = torch.zeros(1, dtype=torch.int32, device=device)
        self.spin_limit = SPIN_LIMIT
        self._pushed: int | None = None  # data_ptr of a partial its GEMV has pushed

    @staticmethod
    def buffer_bytes(*, hidden: int, max_rows: int, world_size: int, dtype: torch.dtype) -> int:
        itemsize = torch.tensor([], dtype=dtype).element_size()
        return BUFFERS * max_rows * world_size * hidden * itemsize

    def cells(self) -> torch.Tensor:
        """This GPU's buffer as ``[BUFFERS, max_rows, world, hidden]`` values."""
        shape = (BUFFERS, self.max_rows, self.world_size, self.hidden)
        return self.buffer.view(self.dtype).view(shape)

    @classmethod
    def create(
        cls, *, hidden: int, dtype: torch.dtype, max_rows: int = 64, group=None
    ) -> OneShotAllReduce | None:
        """Map the buffers over the group (collective: every rank calls it), check one
        all-reduce and one fused add-norm against NCCL; None, with the reason, if either fails."""
        import torch.distributed as dist

        try:
            if triton is None:
                raise RuntimeError("Triton is not installed")
            if hidden % 8:
                raise RuntimeError(f"hidden size {hidden} is not a multiple of 8")
            import torch.distributed._symmetric_memory as symm_mem

            group = group or dist.group.WORLD
            world_size, rank = dist.get_world_size(group), dist.get_rank(group)
            name = group.group_name
            if hasattr(symm_mem, "enable_symm_mem_for_group"):  # needed before torch 2.9
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", FutureWarning)
                    symm_mem.enable_symm_mem_for_group(name)
            size = cls.buffer_bytes(
                hidden=hidden, max_rows=max_rows, world_size=world_size, dtype=dtype
            )
            buffer = symm_mem.empty(size, dtype=torch.uint8, device=torch.cuda.current_device())
            handle = symm_mem.rendezvous(buffer, name)
            pointers = torch.tensor(handle.buffer_ptrs, dtype=torch.int64, device=buffer.device)
            reducer = cls(
                buffer=buffer,
                pointers=pointers,
                rank=rank,
                world_size=world_size,
                hidden=hidden,
                max_rows=max_rows,
                dtype=dtype,
            )
            torch.cuda.synchronize()
            dist.barrier(group)  # every buffer marked unwritten before anyone pushes
            reducer._check_against_nccl(group)
            return reducer
        except Exception as error:  # noqa: BLE001 - any failure means: use NCCL
            if dist.get_rank() == 0:
                print(f"one-shot all-reduce unavailable, using NCCL: {error}", flush=True)
            return None

    def _check_against_nccl(self, group) -> None:
        import torch.distributed as dist

        generator = torch.Generator(device=self.buffer.device).manual_seed(dist.get_rank(group))
        for rows in (1, 3, self.max_rows):
            shape = (rows, self.hidden)
            partial = torch.randn(shape, generator=generator, device="cuda").to(self.dtype)
            residual = torch.randn(shape, generator=generator, device="cuda").to(self.dtype)
            weight = torch.rand(self.hidden, device="cuda").to(self.dtype)
            expected = partial.clone()
            dist.all_reduce(expected, group=group)
            for _ in range(BUFFERS):  # every buffer once
                torch.testing.assert_close(
                    self.all_reduce(partial), expected, rtol=2e-2, atol=2e-2
                )
            new_residual, normed = self.add_rms_norm(residual, partial, weight, 1e-5)
            summed = residual.float() + expected.float()
            reference = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-5)
            torch.testing.assert_close(new_residual.float(), summed, rtol=2e-2, atol=5e-2)
            torch.testing.assert_close(
                normed.float(), reference * weight.float(), rtol=3e-2, atol=5e-2
            )
        self.check()

    def applies(self, x: torch.Tensor) -> bool:
        rows = x.numel() // self.hidden
        return (
            x.dtype == self.dtype
            and x.shape[-1] == self.hidden
            and rows <= self.max_rows
            and x.is_contiguous()
        )

    def mark_pushed(self, partial: torch.Tensor) -> None:
        """``partial``'s kernel has stored it into the peers' buffers (the GEMV's ``push``): the
        next all-reduce of it only waits, sums and normalizes."""
        self._pushed = partial.data_ptr()

    def _launch(self, partial, residual, weight, scale, out_residual, out, eps) -> None:
        rows = partial.numel() // self.hidden
        pushed, self._pushed = self._pushed == partial.data_ptr(), None
        _one_shot_kernel[(rows,)](
            partial,
            self.pointers,
            self.counters,
            self.error,
            residual if residual is not None else partial,
            weight if weight is not None else partial,
            scale if scale is not None else self.error,
            out_residual if out_residual is not None else out,
            out,
            self.hidden,
            self.max_rows,
            eps,
            self.spin_limit,
            RANK=self.rank,
            WORLD=self.world_size,
            PUSH=not pushed,
            FUSE_NORM=residual is not None,
            TO_FP8=scale is not None,
            BLOCK=triton.next_power_of_2(self.hidden),
            num_warps=4 if self.hidden <= 4096 else 8,
            **pdl.launch_options(),
        )

    def all_reduce(self, partial: torch.Tensor) -> torch.Tensor:
        """The sum over the group of ``partial`` (any shape ending in ``hidden``)."""
        out = torch.empty_like(partial)
        self._launch(partial, None, None, None, None, out, 0.0)
        return out

    def add_rms_norm(
        self,
        residual: torch.Tensor,
        partial: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        *,
        fp8_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual + all_reduce(partial)`` and its RMSNorm (FP8 divided by ``fp8_scale`` when
        given, for a GEMM with a static input scale), in one kernel."""
        new_residual = torch.empty_like(residual)
        out_dtype = torch.float8_e4m3fn if fp8_scale is not None else residual.dtype
        normed = torch.empty(residual.shape, dtype=out_dtype, device=residual.device)
        self._launch(partial, residual, weight, fp8_scale, new_residual, normed, eps)
        return new_residual, normed

    def check(self) -> None:
        """Raise if a wait ever gave up (a peer never arrived): the results are not valid."""
        if int(self.error.item()):
            raise RuntimeError("one-shot all-reduce: a peer did not arrive (timed out)")
