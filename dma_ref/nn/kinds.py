"""The attention kinds of the tiny model, as one rule: which keys a query keeps, for how
long, and with which weights.

    mha   query p keeps every key j <= p                       lifetimes e_j = N
    mla   as mha (keys and values from a shared latent; q, k carry d_R rotary channels more)
    swa   query p keeps the w most recent keys p - w < j <= p  lifetimes e_j = min(j + w, N)
    dma   query p keeps the w best-scored keys of j <= p       lifetimes e_j = key_lifetimes(s, w)
          and adds the score s_j to the logit
    nsa   no rule of scores and a window: its blocks are chosen from q and k
          (``NativeSparseAttention.kept``); the functions here refuse it

Functions of the kind's name and a window, so that the explorer can ask "what if w were
different" of a trained layer; the attention modules call them with their own kind and window.
"""

from __future__ import annotations

import torch

from ..dense import expand_kv
from ..lifetimes import key_lifetimes
from ..mask import dma_mask, sliding_window_lifetimes, sliding_window_mask

ATTENTIONS = ("mha", "swa", "dma", "mla", "nsa")
# The kinds whose kept keys follow from scores and a window (the explorer's view).
SCORE_RULE = ("mha", "swa", "dma", "mla")


def check_kind(attn: str) -> str:
    if attn not in ATTENTIONS:
        raise ValueError(f"attn must be one of {ATTENTIONS}, got {attn!r}")
    return attn


def check_rule(attn: str) -> str:
    if check_kind(attn) not in SCORE_RULE:
        raise ValueError(f"attn={attn!r} keeps keys chosen from q and k, not from scores and a "
                         f"window; the rule covers {SCORE_RULE} (NSA: NativeSparseAttention.kept)")
    return attn


def band(attn: str, window: int, N: int) -> int:
    """The sliding band of a kind without scores: w for swa, N (every past key) for mha, mla."""
    return window if check_rule(attn) == "swa" else N


def kept(attn: str, s: torch.Tensor, window: int) -> torch.Tensor:
    """bool ``[B, H, N, N]``: query p keeps key j. s ``[B, H, N]``: DMA's scores (for mha and
    swa only its shape and device are used)."""
    B, H, N = s.shape
    if check_rule(attn) == "dma":
        return dma_mask(s, window)
    return sliding_window_mask(N, band(attn, window, N), s.device).expand(B, H, N, N)


def lifetimes(attn: str, s: torch.Tensor, window: int) -> torch.Tensor:
    """int64 ``[B, H, N]``: key j is kept by the positions ``j <= p < e_j``. s as in :func:`kept`."""
    B, H, N = s.shape
    if check_rule(attn) == "dma":
        return key_lifetimes(s.float().cpu(), window).to(s.device)
    return sliding_window_lifetimes(N, band(attn, window, N), s.device).expand(B, H, N)


def probs(attn: str, q: torch.Tensor, k: torch.Tensor, s: torch.Tensor, window: int) -> torch.Tensor:
    """float32 ``[B, Hq, N, N]``: the attention weights, softmax over kept keys of
    ``q k^T / sqrt(D)`` (+ ``s_j`` for dma). q ``[B, Hq, N, D]``, k ``[B, Hkv, N, D]``,
    s ``[B, Hkv, N]``."""
    Hq, D = q.shape[1], q.shape[-1]            # mla: D is D + d_R, its scale
    check_rule(attn)
    logits = (q.float() @ expand_kv(k, Hq).float().transpose(-1, -2)) * D ** -0.5
    if attn == "dma":
        logits = logits + expand_kv(s.float(), Hq)[:, :, None, :]
    keep = expand_kv(kept(attn, s, window), Hq)
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1)
