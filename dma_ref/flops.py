"""How much work attention must do: pairs, FLOPs, bytes and the two floors.

The numbers behind figures/bench/PERF_NOTES.md.

A (query, key) *pair* is one logit. Per pair and query head the forward does two dot products
of length D (``q·k`` and ``p·v``): 4·D FLOPs. The backward recomputes ``q·k`` and does four
more (``dV += p·dO``, ``dP = dO·v``, ``dQ += dS·k``, ``dK += dS·q``): 10·D FLOPs, so
forward + backward is 3.5 times the forward. Softmax, masking and the bias cost O(1) per pair
and are left out (they run on the slower non-matrix units, which is part of why real kernels
stay under the matrix floor).

Pair counts (one head, Q = K = N, causal):

* dense causal: ``N (N + 1) / 2``;
* DMA, kept pairs: ``sum_p min(w, p + 1)``, the logits that matter;
* DMA, work pairs of the block-gather kernel (DESIGN.md section 5): a block of ``BM`` queries
  ending at position ``p_max`` gathers the union of its rows' kept keys, at most
  ``min(w + BM - 1, p_max + 1)`` keys, and computes all ``BM x union`` logits. This is about
  ``N (w + BM)`` when ``w << N``, and a little more than dense causal when ``w >= N`` (whole
  diagonal blocks).

Bytes: the fewest a kernel can move through device memory, each input read once and each
output written once. The floors are FLOPs over the measured bf16 matrix rate (~790 TFLOP/s)
and bytes over the measured copy bandwidth (~4.3 TB/s), both measured on this project's H200
(see the device notes); the larger one bounds the time from below.
"""

from __future__ import annotations

from dataclasses import dataclass

MATMUL_TFLOPS = 790.0     # measured bf16 8192^3 product on the H200 (random data)
COPY_TBPS = 4.3           # measured device-to-device copy, bytes read + written
FWD_FLOPS_PER_PAIR_PER_D = 4          # q.k and p.v
BWD_FLOPS_PER_PAIR_PER_D = 10         # q.k (recompute), dV, dP, dQ, dK


def causal_pairs(N: int) -> int:
    """Logits of one head of dense causal attention, ``N (N + 1) / 2``."""
    return N * (N + 1) // 2


def dma_kept_pairs(N: int, window: int) -> int:
    """Logits that DMA row mode keeps in one head: ``sum over p < N of min(w, p + 1)``."""
    w = min(window, N)
    return w * (w + 1) // 2 + (N - w) * w


def _blocks(N: int, BM: int):
    """``(rows, union)`` per query block: its row count and its gathered-key bound."""
    for start in range(0, N, BM):
        rows = min(BM, N - start)
        yield rows, start + rows                      # p_max + 1 = start + rows


def dma_union_keys(N: int, window: int, BM: int = 128) -> int:
    """Keys gathered over all query blocks of one head: ``sum min(w + rows - 1, p_max + 1)``."""
    return sum(min(window + rows - 1, past) for rows, past in _blocks(N, BM))


def dma_work_pairs(N: int, window: int, BM: int = 128) -> int:
    """Logits the block-gather kernel computes in one head (an upper bound: full unions).

    Query block ``b`` covers positions ``[b·BM, min((b+1)·BM, N))`` and gathers at most
    ``min(w + rows - 1, p_max + 1)`` keys (DESIGN.md section 5; ``rows = BM`` but in a last,
    partial block), for each of its rows. Reached exactly when every row is a sliding window.
    """
    return sum(rows * min(window + rows - 1, past) for rows, past in _blocks(N, BM))


def attention_flops(pairs: int, D: int, heads: int, B: int = 1, *, backward: bool = False) -> int:
    """Matrix FLOPs for ``pairs`` logits per head: 4·D per pair forward, 14·D forward+backward."""
    per_pair = FWD_FLOPS_PER_PAIR_PER_D + (BWD_FLOPS_PER_PAIR_PER_D if backward else 0)
    return per_pair * D * pairs * heads * B


def attention_bytes(N: int, D: int, Hq: int, Hkv: int, B: int = 1, *, backward: bool = False,
                    scores: bool = True, elem: int = 2) -> int:
    """Fewest bytes moved: inputs read once, outputs written once (bf16 tensors, fp32 lse).

    Forward reads q ``[B,Hq,N,D]``, k and v ``[B,Hkv,N,D]`` (and s ``[B,Hkv,N]`` for DMA), writes
    o and lse. The backward reads q, k, v, o, dO, lse (and s), writes dq, dk, dv (and ds).
    """
    q = B * Hq * N * D * elem
    kv = 2 * B * Hkv * N * D * elem
    s = B * Hkv * N * elem if scores else 0
    lse = B * Hq * N * 4
    fwd = q + kv + s + q + lse                     # read q, k, v, s; write o, lse
    if not backward:
        return fwd
    # read q, k, v, s, o, dO, lse; write dq, dk, dv, ds
    bwd = (q + kv + s + q + q + lse) + (q + kv + s)
    return fwd + bwd


@dataclass(frozen=True)
class Floor:
    """The two lower bounds on a kernel's time (ms) and which one binds."""

    flops: int
    bytes: int
    compute_ms: float
    memory_ms: float

    @property
    def ms(self) -> float:
        return max(self.compute_ms, self.memory_ms)

    @property
    def bound(self) -> str:
        return "compute" if self.compute_ms >= self.memory_ms else "memory"


def floor(flops: int, nbytes: int, *, tflops: float = MATMUL_TFLOPS,
          tbps: float = COPY_TBPS) -> Floor:
    """``Floor`` from a FLOP and a byte count and the two measured ceilings."""
    return Floor(flops, nbytes, flops / (tflops * 1e12) * 1e3, nbytes / (tbps * 1e12) * 1e3)


def config_floors(N: int, window: int | None, D: int, Hq: int = 8, Hkv: int = 2, B: int = 1, *,
                  backward: bool = False, BM: int = 128) -> Floor:
    """The floor of one benchmark config; ``window=None`` is dense causal (no scores)."""
    if window is None:
        pairs, scores = causal_pairs(N), False
    else:
        pairs, scores = dma_work_pairs(N, window, BM), True
    return floor(attention_flops(pairs, D, Hq, B, backward=backward),
                 attention_bytes(N, D, Hq, Hkv, B, backward=backward, scores=scores))


def work_ratio(N: int, window: int, BM: int = 128) -> float:
    """Dense causal pairs over DMA work pairs: the best speed-up that skipping work can buy."""
    return causal_pairs(N) / dma_work_pairs(N, window, BM)


def crossover_n(window: int, BM: int = 128) -> int:
    """Smallest N at which the model ``N·(w + BM)`` of DMA work is at most half of dense causal
    ``N (N + 1) / 2``: ``(w + BM) <= (N + 1) / 4``, so ``N = 4 (w + BM) - 1``."""
    return 4 * (window + BM) - 1
