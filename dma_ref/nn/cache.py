"""Decoding caches: DMA's bounded cache (at most w keys per head, exact) and the full or
sliding-window cache of MHA and SWA.

Why w slots are enough for DMA (causal row mode): key j is kept by exactly the positions
``j <= p < e_j`` (``dma_ref.key_lifetimes``), so a key evicted once is never kept again, and
the keys a query at position p keeps are the w best of its prefix by ``(s_j, j)``. A chunk of C
new tokens (a prompt, a prefill chunk or one decoded token) therefore attends over the
*compacted* sequence ``[live keys in position order; chunk keys]`` with Q = C (bottom-right
aligned): the live keys are the top ``min(w, P)`` of the P tokens before the chunk, so every
query keeps there exactly the keys it keeps in the full sequence, ties included (the order, and
with it the tie rule "the later key wins", is preserved). Afterwards the cache keeps the keys
whose lifetime on the compacted sequence reaches its end: its w best keys.

Layout, per layer (``LayerState``): k, v ``[B, Hkv, L, D]`` (keys after RoPE), s ``[B, Hkv, L]``
(DMA's scores; ``s_j`` depends on ``v_j`` alone, so it is computed once per key) and pos int64
``[B, Hkv, L]`` (absolute positions). Each (sequence, KV head) holds its own keys in position
order, *left-padded* with empty slots (``pos = -1``, ``s = -inf``, ``k = v = 0``) up to the
longest row L. Padding is kept out of the ranking by its score: ``-inf`` ranks below every real
(finite) score, so a query keeps ``min(w, #real keys of its prefix)`` real keys and perhaps some
empty slots, whose logit ``q.k + (-inf)`` gives them weight 0; empty slots never survive a
compaction. The same holds for padding *tokens* in a chunk (left-padded prompts of different
lengths): their positions are -1 (``KVCache.next_positions``), their scores -inf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..dense import expand_kv, masked_softmax_attention
from ..mask import key_ranks
from ..validate import check_window

EMPTY = -1          # the position of an empty slot or of a padding token
Core = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class LayerState:
    """One layer's cached keys: k, v ``[B, Hkv, L, D]``, s ``[B, Hkv, L]`` (None without scores),
    pos int64 ``[B, Hkv, L]`` (-1: empty slot)."""

    k: torch.Tensor
    v: torch.Tensor
    s: torch.Tensor | None
    pos: torch.Tensor

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.k, self.v, self.s, self.pos) if t is not None]


def keep_rows(state: LayerState, keep: torch.Tensor) -> LayerState:
    """The kept entries of ``state`` (keep bool ``[B, Hkv, T]``), each row in position order and
    left-padded to the longest kept row with empty slots."""
    B, H, T = keep.shape
    count = keep.sum(-1)                                            # [B, H]
    L = int(count.max()) if keep.numel() else 0
    # Kept entry -> slot (L - count) + its rank among the kept; dropped -> a spare slot L.
    slot = (L - count)[..., None] + keep.cumsum(-1) - 1
    slot = torch.where(keep, slot, torch.full_like(slot, L))

    def gather(x: torch.Tensor, fill: float) -> torch.Tensor:
        out = x.new_full((B, H, L + 1, *x.shape[3:]), fill)
        index = slot.view(B, H, T, *([1] * (x.dim() - 3))).expand_as(x)
        return out.scatter(2, index, x)[:, :, :L].clone()      # storage of L slots, not L + 1

    s = None if state.s is None else gather(state.s, float("-inf"))
    return LayerState(gather(state.k, 0.0), gather(state.v, 0.0), s, gather(state.pos, EMPTY))


class KVCache:
    """Base of the decoding caches: one ``LayerState`` per layer, the tokens seen per sequence,
    and the last inputs of each layer's short convolution (``conv``, ``[B, kernel-1, C]``).

    ``attend(layer, q, k, v, s, pos, core) -> o`` runs one layer's attention for a chunk:
    q ``[B, Hq, C, D]``, k, v ``[B, Hkv, C, D]`` (after RoPE), s ``[B, Hkv, C]`` or None, pos
    int64 ``[B, C]`` from :meth:`next_positions`; ``core(q, k, v, s) -> o`` is DMA's attention
    (e.g. a ``DMAAttention``'s ``attend``; unused by ``WindowCache``). Returns o
    ``[B, Hq, C, D]`` and stores the keys the next chunks need. Subclasses define
    ``attend_all`` and ``keep``.
    """

    def __init__(self, n_layers: int):
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be an int >= 1, got {n_layers!r}")
        self.layers: list[LayerState | None] = [None] * n_layers
        self.conv: list[torch.Tensor | None] = [None] * n_layers
        self.seen: torch.Tensor | None = None            # int64 [B]: tokens seen per sequence

    def next_positions(self, valid: torch.Tensor) -> torch.Tensor:
        """int64 ``[B, C]``: the absolute positions of a chunk's tokens (-1 for padding), and
        advance the count. valid bool ``[B, C]``: False marks padding (left-padded prompts)."""
        if valid.dtype != torch.bool or valid.dim() != 2:
            raise ValueError(f"valid must be a bool tensor [B, C], got {valid.dtype} "
                             f"{tuple(valid.shape)}")
        if self.seen is None:
            self.seen = torch.zeros(valid.shape[0], dtype=torch.int64, device=valid.device)
        if self.seen.shape[0] != valid.shape[0]:
            raise ValueError(f"valid has batch {valid.shape[0]}, the cache holds {self.seen.shape[0]}")
        pos = self.seen[:, None] + valid.long().cumsum(-1) - 1
        self.seen = self.seen + valid.sum(-1)
        return torch.where(valid, pos, torch.full_like(pos, EMPTY))

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               s: torch.Tensor | None, pos: torch.Tensor, core: Core | None = None
               ) -> torch.Tensor:
        B, Hkv, C, _ = k.shape
        if pos.shape != (B, C):
            raise ValueError(f"pos must have shape [B={B}, C={C}], got {tuple(pos.shape)}")
        pos = pos[:, None, :].expand(B, Hkv, C)
        if s is not None:                                   # padding ranks below every key
            s = torch.where(pos >= 0, s, torch.full_like(s, float("-inf")))
        chunk = LayerState(k, v, s, pos)
        old = self.layers[layer]
        if old is None:
            full = chunk
        else:
            full = LayerState(*(torch.cat([a, b], dim=2) if a is not None else None
                                for a, b in zip((old.k, old.v, old.s, old.pos),
                                                (k, v, s, pos))))
        o = self.attend_all(core, q, full, C)
        with torch.no_grad():
            keep = self.keep(full, layer) & (full.pos >= 0)
        self.layers[layer] = keep_rows(detached(full), keep)
        return o

    def attend_all(self, core: Core | None, q: torch.Tensor, full: LayerState, C: int
                   ) -> torch.Tensor:
        raise NotImplementedError

    def keep(self, full: LayerState, layer: int) -> torch.Tensor:
        """bool ``[B, Hkv, T]``: which keys of ``full`` the next chunks need."""
        raise NotImplementedError

    def kv_bytes(self) -> int:
        """Bytes of every tensor the cache holds for attention (k, v, s, pos of every layer,
        empty slots included; the convolution's inputs are not counted)."""
        return sum(t.numel() * t.element_size() for st in self.layers if st is not None
                   for t in st.tensors())

    def lengths(self, layer: int) -> torch.Tensor:
        """int64 ``[B, Hkv]``: keys held per sequence and KV head in ``layer``."""
        st = self.layers[layer]
        if st is None:
            raise ValueError(f"layer {layer} holds nothing yet")
        return (st.pos >= 0).sum(-1)


def detached(st: LayerState) -> LayerState:
    return LayerState(*(t.detach() if t is not None else None
                        for t in (st.k, st.v, st.s, st.pos)))


class DMACache(KVCache):
    """DMA's exact bounded cache: at most w keys per (layer, sequence, KV head), plus the chunk
    in flight (``window``: w, or one w per layer). Causal row mode only (global mode selects over future keys: no cache can be
    exact for it).

    ``attend`` runs the layer's own DMA core (``core``, e.g. ``DMAAttention.attend`` with any
    backend: naive, SDPA or the Triton kernel) on the compacted sequence ``[live; chunk]`` with
    Q = C, then keeps the w best keys of that sequence by ``(s_j, j)``: those whose lifetime reaches its end
    (``key_lifetimes(s, w) == T`` exactly when the rank is below w).
    """

    def __init__(self, n_layers: int, window: int | Sequence[int]):
        super().__init__(n_layers)
        windows = [window] * n_layers if isinstance(window, int) else list(window)
        if len(windows) != n_layers:
            raise ValueError(f"window must be an int or one int per layer ({n_layers}), "
                             f"got {window!r}")
        self.windows = [check_window(w) for w in windows]

    def attend_all(self, core, q, full, C):
        if full.s is None or core is None:
            raise ValueError("DMACache needs the scores s of every chunk and the DMA core")
        return core(q, full.k, full.v, full.s)

    def keep(self, full, layer):
        return key_ranks(full.s) < self.windows[layer]


class WindowCache(KVCache):
    """MHA's full cache (``window=None``: every key, growing with the context) or SWA's
    sliding one (the ``window - 1`` most recent keys: the next query adds its own).

    Attention here is plain softmax over the keys with ``pos_k <= pos_q`` (and
    ``pos_k > pos_q - w`` for SWA), from the stored positions.
    """

    def __init__(self, n_layers: int, window: int | None = None):
        super().__init__(n_layers)
        self.window = None if window is None else check_window(window)

    def attend_all(self, core, q, full, C):
        return window_attention(q, full.k, full.v, full.pos[:, 0, -C:], full.pos, self.window)

    def keep(self, full, layer):
        if self.window is None:
            return torch.ones_like(full.pos, dtype=torch.bool)
        last = full.pos.amax(-1, keepdim=True)
        return full.pos > last - self.window + 1


def window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos_q: torch.Tensor,
                     pos_k: torch.Tensor, window: int | None) -> torch.Tensor:
    """Causal (sliding-window) softmax attention by absolute positions.

    q ``[B, Hq, C, D]``; k, v ``[B, Hkv, T, D]``; pos_q int64 ``[B, C]``; pos_k ``[B, Hkv, T]``
    (-1: empty). Query at p keeps key at j iff ``0 <= j <= p`` (and ``j > p - window``).
    Returns o ``[B, Hq, C, D]`` in q's dtype (rows with no key, i.e. padding, give 0).
    """
    Hq, D = q.shape[1], q.shape[-1]
    pq, pk = pos_q[:, None, :, None], pos_k[:, :, None, :]
    keep = (pk >= 0) & (pk <= pq)
    if window is not None:
        keep = keep & (pk > pq - window)
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    logits = (q.to(acc) @ expand_kv(k, Hq).to(acc).transpose(-1, -2)) * D ** -0.5
    o, _ = masked_softmax_attention(logits, expand_kv(keep, Hq), expand_kv(v, Hq).to(acc))
    return o.to(q.dtype)


def make_cache(attn: str, n_layers: int, window: int | Sequence[int]) -> KVCache:
    """The cache of an attention kind: ``DMACache`` for dma, a sliding ``WindowCache`` for swa,
    a full one for mha."""
    if attn == "dma":
        return DMACache(n_layers, window)
    if attn == "swa":
        return WindowCache(n_layers, window)
    if attn == "mha":
        return WindowCache(n_layers, None)
    raise ValueError(f"attn must be 'mha', 'swa' or 'dma', got {attn!r}")



def cache_update(live_pos: torch.Tensor, live_s: torch.Tensor, new_pos: torch.Tensor,
                 new_s: torch.Tensor, window: int) -> torch.Tensor:
    """One (sequence, KV head) of ``DMACache``'s update, spelled out: int64 ``[min(w, L + C)]``,
    the positions of the keys alive after a chunk, ascending.

    live_pos int64 ``[L]`` ascending (the live keys), live_s ``[L]`` their scores; new_pos int64
    ``[C]`` ascending, after every live position; new_s ``[C]``. Keeps the w best of
    ``[live; new]`` by ``(s_j, j)``, the later key winning a tie.
    """
    pos, s = torch.cat([live_pos, new_pos]), torch.cat([live_s, new_s])
    return pos[key_ranks(s) < check_window(window)]
