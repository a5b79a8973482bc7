"""Small numeric helpers shared by the package, the kernels' host code and the tests.

``triton.cdiv`` and ``triton.next_power_of_2`` are constexpr functions: called from Python they
cost ~5 us each, and the kernels' host code calls them on every launch; these are plain ints.
"""

from __future__ import annotations

import torch


def cdiv(a: int, b: int) -> int:
    """``ceil(a / b)`` for integers, ``b > 0``."""
    return -(-a // b)


def next_pow2(n: int) -> int:
    """The smallest power of two ``>= n`` (1 for ``n <= 1``)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64 (Frobenius norms; 0 when both are zero, inf when only
    b is). The accuracy measure of the kernels' tests and of the benchmark's checks."""
    a, b = a.detach().double(), b.detach().double()
    num, den = float((a - b).norm()), float(b.norm())
    if den == 0.0:
        return 0.0 if num == 0.0 else float("inf")
    return num / den
