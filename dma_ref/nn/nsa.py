"""Native sparse attention (NSA, Yuan et al. 2025, https://arxiv.org/abs/2502.11089), causal.

Every query t reads three branches of the same keys and values and mixes them with learned
sigmoid gates (one triple per query head and position, from x)::

    cmp  compressed: block i of l tokens (start i*d, stride d) -> one key and one value through
         a learned MLP (with a learned intra-block position embedding); query t attends to the
         blocks that end at or before t (none yet: the branch gives 0)
    slc  selected: the keys are cut into blocks of l' tokens; a block's importance for query t is
         the compressed attention probability of the compressed blocks overlapping it, summed
         over the query heads of a KV group (one selection per group, as in the paper); query t
         keeps n blocks: the first block and its own block always, then the most important past
         blocks, ties to the later block; inside its own block only keys j <= t
    win  sliding window: the w most recent keys  t - w < j <= t

    o_t = g_cmp o_cmp + g_slc o_slc + g_win o_win,     g = sigmoid(x W_g)   [B, Hq, N, 3]

Sizes: the paper used l = 32, d = 16, l' = 64, n = 16 (its initial block and two local blocks
included) and w = 512 at 64K tokens. At notebook sizes (N = 128-512, w = 16-64) :func:`nsa_sizes`
scales them from w: ``l = w/8, d = l/2, l' = 2l, n = w/l'`` (at least 2, 1, 2l, 2), so the
selected blocks hold w tokens like the window (the paper's held 2w) and the ratios l'/l = 2 and
l/d = 2 are the paper's. Simplifications, stated: one set of k, v serves all three branches
(the paper gives each branch its own; lucidrains' package shares them too), the compression MLP
has one hidden layer of width D, and one local block is forced instead of two.

``project`` returns ``(q, k, v, g)``: the fourth slot, DMA's scores elsewhere, carries the gates.
What NSA keeps depends on q and k, not on per-key scores, so ``keep``/``lifetimes``/``probs``
(the explorer's view of a score-masked layer) raise; :meth:`NativeSparseAttention.kept` gives
the three branches' key sets instead. The selection is a constant of the forward pass (top-n is
not differentiated); the compressed branch learns through its own output.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..dense import expand_kv, masked_softmax_attention
from ..mask import sliding_window_mask
from ..numerics import cdiv
from .attention import ProjectedAttention


@dataclass(frozen=True)
class NSASizes:
    """block l (compressed block), stride d, select_block l', n_select n (blocks per query)."""

    block: int
    stride: int
    select_block: int
    n_select: int

    def __post_init__(self) -> None:
        if not 1 <= self.stride <= self.block:
            raise ValueError(f"need 1 <= stride <= block (every token in some compressed block); "
                             f"got block={self.block}, stride={self.stride}")
        if self.select_block < 1 or self.n_select < 1:
            raise ValueError(f"select_block and n_select must be >= 1, got "
                             f"{self.select_block}, {self.n_select}")


def nsa_sizes(window: int) -> NSASizes:
    """The paper's sizes scaled to a window w (module docstring): l = max(2, w // 8),
    d = max(1, l // 2), l' = 2 l, n = max(2, w // l')."""
    block = max(2, window // 8)
    return NSASizes(block, max(1, block // 2), 2 * block, max(2, window // (2 * block)))


def compressed_ends(N: int, sizes: NSASizes) -> torch.Tensor:
    """int64 ``[n_cmp]``: the last position of each complete compressed block among N tokens
    (block i covers ``[i d, i d + l)``)."""
    n_cmp = max(0, (N - sizes.block) // sizes.stride + 1)
    return torch.arange(n_cmp) * sizes.stride + sizes.block - 1


def block_overlap(N: int, sizes: NSASizes) -> torch.Tensor:
    """float ``[n_cmp, n_sel]``: 1 where compressed block i and selection block j share a token."""
    ends = compressed_ends(N, sizes)
    starts = ends - sizes.block + 1
    j = torch.arange(cdiv(N, sizes.select_block))
    lo, hi = j * sizes.select_block, (j + 1) * sizes.select_block - 1
    return ((starts[:, None] <= hi[None, :]) & (ends[:, None] >= lo[None, :])).float()


def select_blocks(importance: torch.Tensor, sizes: NSASizes) -> torch.Tensor:
    """bool ``[B, Hkv, N, n_sel]``: the selection blocks each query keeps.

    ``importance`` ``[B, Hkv, N, n_cmp]``: compressed attention probabilities summed over the
    query heads of each KV group. Blocks starting after t are never kept; block 0 and the block
    holding t always are; then the highest ``importance @ block_overlap`` win, ties to the later
    block, up to ``n_select`` blocks in all."""
    N = importance.shape[2]
    L = sizes.select_block
    n_sel = cdiv(N, L)
    score = importance.double() @ block_overlap(N, sizes).double().to(importance.device)
    t = torch.arange(N, device=importance.device)[:, None]
    j = torch.arange(n_sel, device=importance.device)[None, :]
    score = score.masked_fill(j * L > t, float("-inf"))
    score = score.masked_fill((j == 0) | (j == t // L), float("inf"))
    # Rank by (score, j) descending: a stable descending sort of the reversed blocks.
    order = n_sel - 1 - score.flip(-1).argsort(dim=-1, descending=True, stable=True)
    top = order[..., :sizes.n_select]
    ok = score.gather(-1, top) > float("-inf")
    return torch.zeros_like(score, dtype=torch.bool).scatter(-1, top, ok)


def selected_keys(blocks: torch.Tensor, sizes: NSASizes) -> torch.Tensor:
    """bool ``[B, Hkv, N, N]``: the keys of the kept blocks ``blocks [B, Hkv, N, n_sel]``, causal."""
    N = blocks.shape[2]
    tokens = blocks.repeat_interleave(sizes.select_block, dim=-1)[..., :N]
    return tokens & torch.ones(N, N, dtype=torch.bool, device=blocks.device).tril()


class NativeSparseAttention(ProjectedAttention):
    """NSA (module docstring) on the shared projections (q, k, v with RoPE; GQA).

    Extra args: ``sizes`` (default ``nsa_sizes(window)``). Extra parameters: ``gate [3 Hq, C]``,
    and per compressed branch (keys, values) an MLP ``[D, l D] -> SiLU -> [D, D]`` with a
    position embedding ``[l, D]``. ``window`` (w) is the sliding branch's; the training loop's
    window curriculum changes it, never the block sizes.
    """

    kind = "nsa"

    def __init__(self, hidden_size: int, num_heads: int, num_kv_heads: int | None = None,
                 head_dim: int | None = None, window: int = 64, *, sizes: NSASizes | None = None,
                 rope: bool = True, rope_base: float = 10000.0):
        super().__init__(hidden_size, num_heads, num_kv_heads, head_dim, window, rope=rope,
                         rope_base=rope_base)
        self.sizes = nsa_sizes(window) if sizes is None else sizes
        D, l = self.D, self.sizes.block
        self.gate = nn.Linear(hidden_size, 3 * num_heads, bias=False)
        self.cmp_pos_k = nn.Parameter(torch.zeros(l, D))
        self.cmp_pos_v = nn.Parameter(torch.zeros(l, D))
        self.cmp_k = nn.Sequential(nn.Linear(l * D, D), nn.SiLU(), nn.Linear(D, D))
        self.cmp_v = nn.Sequential(nn.Linear(l * D, D), nn.SiLU(), nn.Linear(D, D))

    def project(self, x: torch.Tensor):
        """``x [B, N, C] -> (q [B, Hq, N, D], k, v [B, Hkv, N, D], g [B, Hq, N, 3])``, g the
        branch gates (cmp, slc, win) in (0, 1)."""
        q, k, v, _ = super().project(x)
        B, N, _ = x.shape
        g = torch.sigmoid(self.gate(x)).view(B, N, self.Hq, 3).transpose(1, 2)
        return q, k, v, g

    def compress(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``k, v [B, Hkv, N, D] -> (k_cmp, v_cmp) [B, Hkv, n_cmp, D]``, one per complete
        compressed block (``compressed_ends``)."""
        l, d = self.sizes.block, self.sizes.stride

        def squeeze(x: torch.Tensor, pos: torch.Tensor, mlp: nn.Module) -> torch.Tensor:
            B, H, N, D = x.shape
            if N < l:
                return x.new_zeros(B, H, 0, D)
            blocks = x.unfold(2, l, d).transpose(-1, -2) + pos          # [B, H, n_cmp, l, D]
            return mlp(blocks.flatten(-2))

        return squeeze(k, self.cmp_pos_k, self.cmp_k), squeeze(v, self.cmp_pos_v, self.cmp_v)

    def compressed(self, q: torch.Tensor, k_cmp: torch.Tensor, v_cmp: torch.Tensor):
        """The compressed branch: ``(o [B, Hq, N, D], importance [B, Hkv, N, n_cmp])``, the
        importance detached (it only chooses blocks)."""
        B, _, N, _ = q.shape
        if k_cmp.shape[2] == 0:                       # N < l: no complete block yet
            return torch.zeros_like(q), q.new_zeros(B, self.Hkv, N, 0).detach()
        valid = compressed_ends(N, self.sizes).to(q.device)[None, :] <= torch.arange(
            N, device=q.device)[:, None]                                 # [N, n_cmp]
        logits = (q @ expand_kv(k_cmp, self.Hq).transpose(-1, -2)) * self.D ** -0.5
        o, lse = masked_softmax_attention(logits, valid, expand_kv(v_cmp, self.Hq))
        with torch.no_grad():
            p = torch.exp(logits.masked_fill(~valid, float("-inf")) - lse[..., None]).nan_to_num(0.0)
            n_cmp = p.shape[-1]
            importance = p.view(B, self.Hkv, -1, N, n_cmp).sum(2)
        return o, importance

    def attend(self, q, k, v, g) -> torch.Tensor:
        """``(q [B, Hq, N, D], k, v [B, Hkv, N, D], g [B, Hq, N, 3]) -> o [B, Hq, N, D]``."""
        o_cmp, importance = self.compressed(q, *self.compress(k, v))
        keep_slc = selected_keys(select_blocks(importance, self.sizes), self.sizes)
        k_e, v_e = expand_kv(k, self.Hq), expand_kv(v, self.Hq)
        o_slc = F.scaled_dot_product_attention(q, k_e, v_e, attn_mask=expand_kv(keep_slc, self.Hq))
        band = sliding_window_mask(q.shape[2], self.window, q.device)
        o_win = F.scaled_dot_product_attention(q, k_e, v_e, attn_mask=band)
        g = g.to(q.dtype)
        return g[..., 0:1] * o_cmp + g[..., 1:2] * o_slc + g[..., 2:3] * o_win

    @torch.no_grad()
    def kept(self, q: torch.Tensor, k: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each branch reads, bool ``[B, Hkv, N, N]`` each: ``"compressed"`` (the tokens of
        the complete compressed blocks, through their summaries), ``"selected"``, ``"window"``.
        q ``[B, Hq, N, D]``, k ``[B, Hkv, N, D]`` as ``project`` returns them."""
        B, Hkv, N, _ = k.shape
        _, importance = self.compressed(q, *self.compress(k, k))
        ends = compressed_ends(N, self.sizes).to(k.device)
        t = torch.arange(N, device=k.device)
        last_end = torch.full((N,), -1, device=k.device)          # last block ending <= t
        if len(ends):
            idx = torch.searchsorted(ends, t, right=True) - 1
            last_end = torch.where(idx >= 0, ends[idx.clamp(min=0)], last_end)
        cmp = t[None, :] <= last_end[:, None]
        shape = (B, Hkv, N, N)
        return {"compressed": cmp.expand(shape),
                "selected": selected_keys(select_blocks(importance, self.sizes), self.sizes),
                "window": sliding_window_mask(N, self.window, k.device).expand(shape)}

    def refuse(self, what: str):
        raise NotImplementedError(
            f"NSA has no per-key {what}: the blocks it keeps are chosen from q and k, not from "
            "scores; use NativeSparseAttention.kept(q, k) for the three branches' key sets")

    def keep(self, s):
        self.refuse("mask from scores")

    def lifetimes(self, s):
        self.refuse("lifetimes")

    def probs(self, q, k, s):
        self.refuse("attention weights")
