"""A one-shot all-reduce for tensor-parallel decode, fused with the residual add and RMSNorm.

At small batch a TP decode step all-reduces one ``[batch, hidden]`` activation twice a layer:
kilobytes, where NCCL's protocol costs ~12 us each on NVLink (``studies/executor-h200``) and
the add + RMSNorm that follows is one more kernel. Here each all-reduce is one kernel:

1. every GPU pushes its partial sum into each peer's buffer (stores over NVLink into memory that
   all GPUs of the group map, ``torch.distributed._symmetric_memory``; no multicast), into the
   part of the buffer kept for its rank;
2. it raises a flag in each peer's memory (a system-scope release store of an epoch number) and
   waits until every peer has raised its flag in its own memory for that epoch (acquire);
3. it sums the rows now in its own memory in rank order (so every GPU gets bitwise the same
   result), then adds the residual and applies RMSNorm (or, for a plain all-reduce, writes
   the sum). Stores cross NVLink one way; nothing waits on a remote read.

One program handles one row (token) and its own flags, so rows never wait on each other. Two
slots alternate, attention's all-reduce using slot 0 and the MLP's slot 1: a GPU can only write a
slot again after its next all-reduce, which waits for every peer, so every peer has finished
reading that slot by then. Epochs are counted per slot and row on each GPU, in device memory, so
the kernel needs no host input and replays inside a CUDA graph. A wait that exceeds ~2^26 polls
gives up and sets an error flag (``check()`` raises) instead of hanging the job.

Messages over ``max_rows`` rows go to NCCL. ``OneShotAllReduce.create`` checks the kernel against
NCCL once and returns None (with the reason printed) when this machine cannot run it.
"""

from __future__ import annotations

import warnings

import torch

from executor import pdl
from executor.tritonlib import tl, triton

__all__ = ["OneShotAllReduce"]


SLOTS = 2
SPIN_LIMIT = 1 << 26


if triton is not None:
    from executor.elementwise import add_rms_norm_row

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
        slot,
        hidden,
        max_rows,
        flags_offset,
        eps,
        spin_limit,
        RANK: tl.constexpr,
        WORLD: tl.constexpr,
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
        cell = slot * max_rows + row  # this row's place in the slot
        # Push: this row goes into every GPU's buffer, in the part kept for this rank.
        for dst in tl.static_range(WORLD):
            if dst != RANK:
                theirs = tl.load(buffers_ptr + dst).to(tl.pointer_type(dtype))
                tl.store(theirs + (cell * WORLD + RANK) * hidden + cols, mine, mask=ok)
        tl.debug_barrier()  # every thread's stores are issued before the flags go up

        counter = counters_ptr + cell
        epoch = tl.load(counter) + 1
        tl.store(counter, epoch)
        for peer in tl.static_range(WORLD):
            if peer != RANK:
                base = tl.load(buffers_ptr + peer) + flags_offset
                flags = base.to(tl.pointer_type(tl.int32))
                tl.atomic_xchg(flags + cell * WORLD + RANK, epoch, sem="release", scope="sys")

        own = tl.load(buffers_ptr + RANK)
        own_flags = (own + flags_offset).to(tl.pointer_type(tl.int32))
        own_data = own.to(tl.pointer_type(dtype))
        total = tl.zeros((BLOCK,), dtype=tl.float32)
        for peer in tl.static_range(WORLD):  # in rank order: the same sum on every GPU
            if peer == RANK:
                total += mine.to(tl.float32)
            else:
                flag = own_flags + cell * WORLD + peer
                spins = 0
                seen = tl.atomic_add(flag, 0, sem="acquire", scope="sys")
                while (seen < epoch) & (spins < spin_limit):
                    seen = tl.atomic_add(flag, 0, sem="acquire", scope="sys")
                    spins += 1
                if seen < epoch:
                    tl.store(error_ptr, 1)
                pushed = own_data + (cell * WORLD + peer) * hidden + cols
                total += tl.load(pushed, mask=ok, other=0.0, volatile=True).to(tl.float32)

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


class OneShotAllReduce:
    """The fused one-shot all-reduce of one TP group, for ``[rows, hidden]`` activations of up
    to ``max_rows`` rows in ``dtype``.

    ``buffer`` is this GPU's mapped buffer (``buffer_bytes``: per slot and row, one row of values
    per rank, then the int32 flags); ``pointers`` the device addresses of every GPU's buffer, in
    rank order. ``create`` builds one over symmetric memory; tests build one over plain tensors
    to run the kernel in Triton's interpreter.

    Callers alternate ``slot`` between consecutive calls (the model: 0 for attention, 1 for the
    MLP); two calls in a row on one slot need a synchronization of the group between them."""

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
        self.flags_offset = self.buffer_bytes(
            hidden=hidden, max_rows=max_rows, world_size=world_size, dtype=dtype
        ) - self._flag_bytes(max_rows, world_size)
        device = buffer.device
        self.counters = torch.zeros(SLOTS * max_rows, dtype=torch.int32, device=device)
        self.error = torch.zeros(1, dtype=torch.int32, device=device)
        self.spin_limit = SPIN_LIMIT

    @staticmethod
    def _flag_bytes(max_rows: int, world_size: int) -> int:
        return SLOTS * max_rows * world_size * 4

    @classmethod
    def buffer_bytes(
        cls, *, hidden: int, max_rows: int, world_size: int, dtype: torch.dtype
    ) -> int:
        """Data ``[SLOTS, max_rows, world, hidden]`` then flags ``[SLOTS, max_rows, world]``."""
        itemsize = torch.tensor([], dtype=dtype).element_size()
        data = SLOTS * max_rows * world_size * hidden * itemsize
        return data + cls._flag_bytes(max_rows, world_size)

    def flags(self) -> torch.Tensor:
        """This GPU's flags, ``[SLOTS * max_rows * world]`` int32 (zero before first use)."""
        return self.buffer[self.flags_offset :].view(torch.int32)

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
            reducer.flags().zero_()
            torch.cuda.synchronize()
            dist.barrier(group)
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
            # NCCL here also orders this round after the last one on every GPU: the one-shot
            # calls below may reuse slot 0 right after the previous round's last call.
            dist.all_reduce(expected, group=group)
            for slot in range(SLOTS):
                torch.testing.assert_close(
                    self.all_reduce(partial, slot=slot), expected, rtol=2e-2, atol=2e-2
                )
            new_residual, normed = self.add_rms_norm(residual, partial, weight, 1e-5, slot=0)
            summed = residual.float() + expected.float()
            reference = summed * torch.rsqrt(summed.pow(2).mean(-1, keepdim=True) + 1e-5)
            torch.testing.assert_close(new_residual.float(), summed, rtol=2e-2, atol=5e-2)
            torch.testing.assert_close(
                normed.float(), reference * weight.float(), rtol=3e-2, atol=5e-2
            )
        self.check()
        # Every GPU done with the check before the model's first all-reduce (slot 0 again).
        torch.cuda.synchronize()
        dist.barrier(group)

    def applies(self, x: torch.Tensor) -> bool:
        rows = x.numel() // self.hidden
        return (
            x.dtype == self.dtype
            and x.shape[-1] == self.hidden
            and rows <= self.max_rows
            and x.is_contiguous()
        )

    def _launch(self, partial, slot, residual, weight, scale, out_residual, out, eps) -> None:
        rows = partial.numel() // self.hidden
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
            slot,
            self.hidden,
            self.max_rows,
            self.flags_offset,
            eps,
            self.spin_limit,
            RANK=self.rank,
            WORLD=self.world_size,
            FUSE_NORM=residual is not None,
            TO_FP8=scale is not None,
            BLOCK=triton.next_power_of_2(self.hidden),
            num_warps=4 if self.hidden <= 4096 else 8,
            **pdl.launch_options(),
        )

    def all_reduce(self, partial: torch.Tensor, *, slot: int) -> torch.Tensor:
        """The sum over the group of ``partial`` (any shape ending in ``hidden``)."""
        out = torch.empty_like(partial)
        self._launch(partial, slot, None, None, None, None, out, 0.0)
        return out

    def add_rms_norm(
        self,
        residual: torch.Tensor,
        partial: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        *,
        slot: int,
        fp8_scale: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``residual + all_reduce(partial)`` and its RMSNorm (FP8 divided by ``fp8_scale`` when
        given, for a GEMM with a static input scale), in one kernel."""
        new_residual = torch.empty_like(residual)
        out_dtype = torch.float8_e4m3fn if fp8_scale is not None else residual.dtype
        normed = torch.empty(residual.shape, dtype=out_dtype, device=residual.device)
        self._launch(partial, slot, residual, weight, fp8_scale, new_residual, normed, eps)
        return new_residual, normed

    def check(self) -> None:
        """Raise if a wait ever gave up (a peer never arrived): the results are not valid."""
        if int(self.error.item()):
            raise RuntimeError("one-shot all-reduce: a peer did not arrive (timed out)")
