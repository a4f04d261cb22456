"""Rotary position embeddings (RoPE) of a Llama: the inverse frequencies, with Llama 3's
scaling of long wavelengths, and the cos/sin tables ``executor.model.Llama`` rotates q and k
with (Hugging Face's "rotate half" layout, so HF checkpoints load unchanged)."""

from __future__ import annotations

import math

import torch

from simulator.data.specs import ModelSpec

__all__ = ["rope_frequencies", "rope_table"]


def rope_frequencies(spec: ModelSpec) -> torch.Tensor:
    """Inverse frequencies ``[head_dim // 2]`` (float64), with Llama 3 scaling when the spec asks.

    Llama 3 keeps high frequencies (wavelength under original_length / high_freq_factor),
    divides low ones (wavelength over original_length / low_freq_factor) by ``factor``, and
    blends linearly in between.
    """
    dim = spec.head_dim
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = spec.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling.get("original_max_position_embeddings", 8192))
        wavelength = 2 * math.pi / inv_freq
        smooth = (original / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
        middle = (wavelength <= original / low) & (wavelength >= original / high)
        inv_freq = torch.where(middle, blended, inv_freq)
    elif kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    return inv_freq


def rope_table(spec: ModelSpec, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin ``[length, head_dim]`` (float32) of positions ``0..length - 1``, each half
    repeated, as Hugging Face's "rotate half" layout wants."""
    angles = torch.outer(torch.arange(length, dtype=torch.float64), rope_frequencies(spec))
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()
