"""Rotary position embedding (RoPE), rotate-half convention.

For position t and channel pair (c, c + D/2) with frequency ``f_c = base^(-2c/D)``:
``x_c' = x_c cos(t f_c) - x_{c+D/2} sin(t f_c)``, ``x_{c+D/2}' = x_{c+D/2} cos(t f_c) + x_c sin(t f_c)``.
"""

from __future__ import annotations

import torch


def rope_angles(positions: torch.Tensor, D: int, base: float = 10000.0):
    """``(cos, sin)``, each float32 ``[len(positions), D]``."""
    if D % 2:
        raise ValueError(f"RoPE needs an even head dim, got D={D}")
    f = base ** (-torch.arange(0, D, 2, device=positions.device, dtype=torch.float32) / D)
    angle = positions.to(torch.float32)[:, None] * f[None, :]
    angle = torch.cat([angle, angle], dim=-1)
    return angle.cos(), angle.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [..., T, D]`` by precomputed ``cos, sin [T, D]``; keeps x's dtype."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)
