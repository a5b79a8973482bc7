"""Integer helpers for the host side of the launches.

``triton.next_power_of_2`` and ``triton.cdiv`` are constexpr functions: called from Python they
cost ~5 us each (argument unwrapping), and one ``dma_attention`` call needed eleven of them.
"""

from __future__ import annotations


def next_pow2(n: int) -> int:
    """The smallest power of two >= n (1 for n <= 1)."""
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for positive b."""
    return -(-a // b)
