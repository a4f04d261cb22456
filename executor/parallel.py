"""Tensor parallelism: ``apply_tp(model)`` shards a built, unchanged Llama across GPUs.

Megatron-style: in each layer the first GEMM of a pair is split by output columns and the second
by input rows, so the pair needs one all-reduce at the end and nothing in between.
- attention: ``wqkv`` column-parallel by heads (each GPU keeps ``num_heads / tp`` query heads and
  ``num_kv_heads / tp`` K/V heads; the q, k and v parts of the fused weight are split
  separately), ``wo`` row-parallel; all-reduce of the attention output ``[B, T, hidden]``.
- MLP: ``w_gate_up`` column-parallel (gate and up parts each split), ``w_down`` row-parallel;
  all-reduce of the MLP output.
- ``lm_head`` column-parallel over the vocabulary, then an all-gather of the logits, so each GPU
  reads only its share of the largest matrix; the embedding (a gather) stays whole.
``apply_tp`` gives the model a ``Collectives``: ``Llama.forward`` all-reduces each row-parallel
output (every batch row, so results are right at any batch size) before the residual add, and
gathers the logits. With ``one_shot`` (``executor.allreduce``) a small all-reduce, the residual
add and the next RMSNorm are one kernel; larger messages (prefill) go to NCCL. For one token,
``push_from_gemv`` has the row-parallel GEMVs store their outputs into the peers' one-shot
buffers themselves, so the all-reduce after them only waits, sums and normalizes.

``shard_model`` does the slicing with no communication, for any rank of a given world size; the
CPU tests use it to check that summing the row-parallel partial outputs of all shards reproduces
the unsharded model. ``random_shard`` builds a rank's shard of seeded random weights one block at
a time, for models whose whole weights do not fit on one GPU (70B in bf16 is 141 GB). The
collectives run over ``torch.distributed`` (NCCL), started by ``torchrun``
(``init_distributed`` reads RANK / WORLD_SIZE / LOCAL_RANK; ``finish_distributed`` leaves).
Pipeline parallelism is not implemented.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from executor.model import Attention, FeedForward, Llama, TransformerBlock
from executor.weights import init_random_weights

__all__ = [
    "init_distributed",
    "finish_distributed",
    "shard_model",
    "random_shard",
    "apply_tp",
    "Collectives",
    "check_tp_divides",
    "row_parallel_linears",
    "push_from_gemv",
]


def init_distributed() -> tuple[int, int]:
    """Join the torchrun job (NCCL on CUDA, gloo on CPU); return (rank, world_size).
    A plain one-process run returns (0, 1) without a process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def finish_distributed() -> None:
    """Leave the torchrun job cleanly: wait for every rank, then drop the process group."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_tp_divides(spec, tp: int) -> None:
    """TP must split query heads, K/V heads, the MLP width and the vocabulary evenly."""
    from simulator.errors import ConfigError

    for label, value in (
        ("num_attention_heads", spec.num_attention_heads),
        ("num_key_value_heads", spec.num_key_value_heads),
        ("intermediate_size", spec.intermediate_size),
        ("vocab_size", spec.vocab_size),
    ):
        if value % tp:
            raise ConfigError(f"tp={tp} does not divide {label}={value}")


def _rows(weight: torch.Tensor, parts: list[int], rank: int, world_size: int) -> torch.Tensor:
    # Split each consecutive part of the output rows into world_size pieces, keep piece `rank`.
    pieces = []
    for part in weight.split(parts, dim=0):
        shard = part.shape[0] // world_size
        pieces.append(part[rank * shard : (rank + 1) * shard])
    return torch.cat(pieces, dim=0).contiguous()


def _columns(weight: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    shard = weight.shape[1] // world_size
    return weight[:, rank * shard : (rank + 1) * shard].contiguous()


def _replace_weight(linear: nn.Linear, weight: torch.Tensor) -> None:
    linear.weight = nn.Parameter(weight, requires_grad=False)
    linear.out_features, linear.in_features = weight.shape


@torch.no_grad()
def shard_model(model: Llama, *, rank: int, world_size: int) -> Llama:
    """Keep this rank's slice of every sharded weight (in place, no communication)."""
    check_tp_divides(model.spec, world_size)
    for layer in model.layers:
        shard_layer(layer, rank=rank, world_size=world_size)
    shard_lm_head(model.lm_head, rank=rank, world_size=world_size)
    model.tp_rank, model.tp_world_size = rank, world_size
    return model


@torch.no_grad()
def shard_layer(layer: TransformerBlock, *, rank: int, world_size: int) -> None:
    """One transformer block's slice: attention by heads, the MLP by its intermediate width."""
    attn: Attention = layer.attention
    head_dim = attn.head_dim
    parts = [attn.num_heads * head_dim, attn.num_kv_heads * head_dim, attn.num_kv_heads * head_dim]
    _replace_weight(attn.wqkv, _rows(attn.wqkv.weight, parts, rank, world_size))
    _replace_weight(attn.wo, _columns(attn.wo.weight, rank, world_size))
    attn.num_heads //= world_size
    attn.num_kv_heads //= world_size
    mlp: FeedForward = layer.mlp
    half = mlp.w_gate_up.weight.shape[0] // 2
    _replace_weight(mlp.w_gate_up, _rows(mlp.w_gate_up.weight, [half, half], rank, world_size))
    _replace_weight(mlp.w_down, _columns(mlp.w_down.weight, rank, world_size))


@torch.no_grad()
def shard_lm_head(lm_head: nn.Linear, *, rank: int, world_size: int) -> None:
    """The vocabulary projection's slice: this rank's share of the vocabulary rows."""
    _replace_weight(lm_head, _rows(lm_head.weight, [lm_head.weight.shape[0]], rank, world_size))


@torch.no_grad()
def random_shard(
    model: Llama, *, device: torch.device, seed: int, rank: int, world_size: int
) -> Llama:
    """Give a Llama built on the ``meta`` device (shapes, no storage) this rank's shard of the
    seeded random weights, one block at a time.

    Each block is made whole on ``device``, initialized and sliced before the next one, so the
    GPU never holds more than the shard plus one whole block. The generator draws in the order
    ``init_random_weights`` does for the whole model, so the result equals
    ``shard_model(whole)`` exactly."""
    spec = model.spec
    check_tp_divides(spec, world_size)
    generator = torch.Generator(device=device).manual_seed(seed)
    for block in (model.embed_tokens, *model.layers, model.norm, model.lm_head):
        block.to_empty(device=device)
        if block is model.lm_head and spec.tie_word_embeddings:
            block.weight = model.embed_tokens.weight  # tied, as Llama.__init__ ties them
        init_random_weights(block, generator=generator)
        if isinstance(block, TransformerBlock):
            shard_layer(block, rank=rank, world_size=world_size)
    shard_lm_head(model.lm_head, rank=rank, world_size=world_size)
    model.tp_rank, model.tp_world_size = rank, world_size
    model.set_rope(model.rope_cos.shape[0])  # the table was built on meta: build it again
    return model


def row_parallel_linears(model: Llama) -> list[nn.Module]:
    """The weights split by input rows, whose outputs are partial sums: every layer's attention
    output and MLP down projection."""
    return [linear for layer in model.layers for linear in (layer.attention.wo, layer.mlp.w_down)]


def push_from_gemv(model: Llama, enabled: bool = True) -> Llama:
    """Give the row-parallel linears the model's one-shot all-reduce as their GEMV's ``push``
    (``executor.kernels.gemv``), or take it away. Call after quantization (which replaces the
    linears); a no-op without TP or without the one-shot all-reduce."""
    one_shot = model.collectives.one_shot if model.collectives is not None else None
    for linear in row_parallel_linears(model):
        linear.gemv_push = one_shot if enabled else None
    return model


def _nccl_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(tensor)  # in place, sum, the default group
    return tensor


class Collectives:
    """The communication of one TP shard, called by ``Llama.forward``.

    ``all_reduce`` sums a row-parallel output over the group; ``gather_last_dim`` joins the
    vocabulary shards of the logits. ``one_shot`` (an ``executor.allreduce.OneShotAllReduce``,
    optional) does small all-reduces together with the residual add and RMSNorm after them, in
    one kernel; ``reduce_add_rms_norm`` returns None where it does not apply (no one-shot, or a
    message too large), and the caller then all-reduces and normalizes apart."""

    def __init__(
        self,
        all_reduce: Callable[[torch.Tensor], torch.Tensor],
        gather_last_dim: Callable[[torch.Tensor], torch.Tensor],
        one_shot=None,
    ) -> None:
        self.all_reduce = all_reduce
        self.gather_last_dim = gather_last_dim
        self.one_shot = one_shot

    @property
    def backend(self) -> str:
        return "one-shot" if self.one_shot is not None else "nccl"

    def reduce_add_rms_norm(
        self,
        residual: torch.Tensor,
        partial: torch.Tensor,
        weight: torch.Tensor,
        eps: float,
        fp8_scale: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.one_shot is None or not self.one_shot.applies(partial):
            return None
        return self.one_shot.add_rms_norm(residual, partial, weight, eps, fp8_scale=fp8_scale)


def _nccl_gather_last_dim(world_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def gather(shard: torch.Tensor) -> torch.Tensor:  # [B, T, vocab / tp] -> [B, T, vocab]
        shard = shard.contiguous()
        out = torch.empty(
            (world_size * shard.shape[0], *shard.shape[1:]), dtype=shard.dtype, device=shard.device
        )
        dist.all_gather_into_tensor(out, shard)  # rank r's shard at rows r*B .. (r+1)*B
        return torch.cat(out.view(world_size, *shard.shape).unbind(0), dim=-1)

    return gather


def apply_tp(
    model: Llama,
    *,
    rank: int | None = None,
    world_size: int | None = None,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    gather_last_dim: Callable[[torch.Tensor], torch.Tensor] | None = None,
    one_shot=None,
) -> Llama:
    """Shard ``model`` for this rank and give it its collectives (NCCL by default, plus an
    optional fused one-shot all-reduce). Call after the weights are loaded and before
    quantization and ``setup_caches``."""
    if rank is None or world_size is None:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    if world_size == 1:
        return model
    if getattr(model, "tp_world_size", 1) != world_size:  # random_shard built it sharded
        shard_model(model, rank=rank, world_size=world_size)
    model.collectives = Collectives(
        all_reduce or _nccl_all_reduce,
        gather_last_dim or _nccl_gather_last_dim(world_size),
        one_shot,
    )
    return model
