"""Synthetic recall tasks: multi-query associative recall (MQAR) and a needle in a haystack.

MQAR (the Zoology recipe, Arora et al. 2024, https://github.com/HazyResearch/zoology). A
sequence of length N starts with P key-value pairs, then asks for the keys again, scattered
among filler tokens::

    position  0   1   2   3  ...  2P-2 2P-1 | ...  f   f  k_3  f  k_1  f  ...
    token    k_1 v_1 k_2 v_2 ...  k_P  v_P  | ...             ^        ^
    target    .   .   .   .  ...   .    .   | ...  .   .  v_3  .  v_1  .  ...

The target at a query position is the value paired with that key earlier in the sequence;
every other target is ``IGNORE = -100`` (PyTorch's cross-entropy skips it), so the loss and the
accuracy are taken over query positions only. Keys come from the lower half of the vocabulary
(token 0 is never drawn), values from the upper half; fillers are key tokens that are not this
sequence's keys, so a token alone does not say whether it is a query: a query is a key token
seen a second time.

Queries take distinct positions ``>= query_start``; the gap from ``query_start`` is drawn from a
power law (``P(gap = g) ∝ (g + 1)^(a - 1)``, a = ``gap_power``, Zoology's 0.01 by default), so
short gaps are likelier. Placing queries far beyond the pairs is what makes a sliding window
fail: with window w and L layers (plus a short convolution of kernel c before each attention),
information travels at most ``L (w - 1 + c - 1)`` positions back, so a query beyond that
distance from the last pair cannot reach any pair.

Every generator takes a seeded ``torch.Generator``: the same seed gives the same batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..numerics import cdiv

IGNORE = -100
# Token roles, one int8 per position (the explorer colours tokens by role).
ROLE_KEY, ROLE_VALUE, ROLE_QUERY, ROLE_FILLER = 0, 1, 2, 3
ROLE_NAMES = ("key", "value", "query", "filler")


@dataclass
class TaskBatch:
    """One batch of a recall task.

    inputs: int64 ``[B, N]`` token ids. targets: int64 ``[B, N]``, ``IGNORE`` where no loss is
    taken. roles: int8 ``[B, N]`` with ``ROLE_KEY`` / ``ROLE_VALUE`` (the pairs, together
    "pair tokens"), ``ROLE_QUERY``, ``ROLE_FILLER``.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    roles: torch.Tensor

    def to(self, device) -> TaskBatch:
        return TaskBatch(self.inputs.to(device), self.targets.to(device), self.roles.to(device))

    @property
    def is_pair(self) -> torch.Tensor:
        """bool ``[B, N]``: the key and value tokens of the pairs."""
        return self.roles <= ROLE_VALUE


def vocab_ranges(vocab_size: int) -> dict[str, range]:
    """Key tokens ``1 .. V/2 - 1`` (fillers are drawn from them too), value tokens ``V/2 .. V-1``.
    Token 0 is never drawn."""
    if vocab_size < 8:
        raise ValueError(f"vocab_size must be >= 8, got {vocab_size}")
    return {"key": range(1, vocab_size // 2), "value": range(vocab_size // 2, vocab_size)}


def query_gap_weights(span: int, gap_power: float | None) -> torch.Tensor:
    """float64 ``[span]``: the relative probability of a query at gap ``g = 0 .. span-1`` after
    ``query_start``: ``(g + 1)^(a - 1)`` for ``a = gap_power`` (a power law; small gaps likelier
    for a < 1), or uniform when ``gap_power`` is None."""
    g = torch.arange(1, span + 1, dtype=torch.float64)
    return torch.ones_like(g) if gap_power is None else g ** (gap_power - 1)


def mqar(batch_size: int, seq_len: int, num_pairs: int, vocab_size: int, *,
         generator: torch.Generator, num_queries: int | None = None,
         query_start: int | None = None, gap_power: float | None = 0.01) -> TaskBatch:
    """A batch of MQAR sequences (see the module docstring).

    Args:
        batch_size: B. seq_len: N. num_pairs: P (pairs at positions ``0 .. 2P - 1``).
        vocab_size: V, split by ``vocab_ranges``; needs P < V/2 - 1 distinct keys (at least one
            key token left for the fillers).
        generator: a seeded ``torch.Generator`` (CPU); the batch is a function of its state.
        num_queries: how many queries per sequence (default P; each asks a distinct key while
            there are keys left, then keys repeat).
        query_start: first position a query may take (default 2P: right after the pairs).
        gap_power: the power law of the query gaps (see ``query_gap_weights``); None: uniform.

    Returns a :class:`TaskBatch` on the CPU.
    """
    B, N, P = batch_size, seq_len, num_pairs
    voc = vocab_ranges(vocab_size)
    n_keys = len(voc["key"])
    n_q = P if num_queries is None else num_queries
    start = 2 * P if query_start is None else query_start
    if not 1 <= P < n_keys:
        raise ValueError(f"num_pairs must be in [1, {n_keys - 1}] for vocab_size={vocab_size} "
                         f"(keys and fillers share {n_keys} tokens), got {P}")
    if start < 2 * P:
        raise ValueError(f"query_start={start} must be >= 2 * num_pairs = {2 * P}")
    if not 1 <= n_q <= N - start:
        raise ValueError(f"num_queries={n_q} does not fit in positions [{start}, {N}) of seq_len={N}")
    g = generator
    # A random order of the key tokens per sequence: the first P are its keys (distinct, so the
    # answer is unique), the rest its fillers.
    order = torch.argsort(torch.rand(B, n_keys, generator=g), dim=-1) + voc["key"].start
    keys, spare = order[:, :P], order[:, P:]
    values = torch.randint(voc["value"].start, voc["value"].stop, (B, P), generator=g)
    inputs = spare.gather(1, torch.randint(0, n_keys - P, (B, N), generator=g))
    targets = torch.full((B, N), IGNORE, dtype=torch.int64)
    roles = torch.full((B, N), ROLE_FILLER, dtype=torch.int8)
    inputs[:, 0:2 * P:2], inputs[:, 1:2 * P:2] = keys, values
    roles[:, 0:2 * P:2], roles[:, 1:2 * P:2] = ROLE_KEY, ROLE_VALUE
    # Which pair each query asks for: a random permutation, cycled if n_q > P.
    which = torch.argsort(torch.rand(B, P, generator=g), dim=-1).repeat(1, cdiv(n_q, P))[:, :n_q]
    # Where the queries go: n_q distinct positions in [start, N), short gaps likelier.
    weights = query_gap_weights(N - start, gap_power).expand(B, -1)
    pos = torch.multinomial(weights, n_q, replacement=False, generator=g) + start
    rows = torch.arange(B)[:, None]
    inputs[rows, pos] = keys.gather(1, which)
    targets[rows, pos] = values.gather(1, which)
    roles[rows, pos] = ROLE_QUERY
    return TaskBatch(inputs, targets, roles)


def needle_in_haystack(batch_size: int, seq_len: int, vocab_size: int, *,
                       generator: torch.Generator, max_depth: int | None = None) -> TaskBatch:
    """A batch of needle-in-a-haystack sequences: one key-value pair (the needle) at a random
    depth among filler tokens, and the key asked again at the last position::

        f f f ... k v f f ... f k       target at the last position: v

    The needle key sits at a position in ``[0, max_depth]`` (default ``N - 3``). Roles: the
    needle is ``ROLE_KEY`` + ``ROLE_VALUE``, the last token ``ROLE_QUERY``. Same vocabulary
    split as MQAR (fillers: key tokens other than the needle's). Returns a :class:`TaskBatch` on
    the CPU.
    """
    B, N = batch_size, seq_len
    if N < 3:
        raise ValueError(f"seq_len must be >= 3, got {N}")
    depth_max = N - 3 if max_depth is None else max_depth
    if not 0 <= depth_max <= N - 3:
        raise ValueError(f"max_depth must be in [0, {N - 3}], got {max_depth}")
    voc = vocab_ranges(vocab_size)
    g = generator
    key = torch.randint(voc["key"].start, voc["key"].stop, (B,), generator=g)
    value = torch.randint(voc["value"].start, voc["value"].stop, (B,), generator=g)
    depth = torch.randint(0, depth_max + 1, (B,), generator=g)
    # Fillers: key tokens shifted past the needle's key (never equal to it).
    shift = torch.randint(1, len(voc["key"]), (B, N), generator=g)
    inputs = (key[:, None] - voc["key"].start + shift) % len(voc["key"]) + voc["key"].start
    targets = torch.full((B, N), IGNORE, dtype=torch.int64)
    roles = torch.full((B, N), ROLE_FILLER, dtype=torch.int8)
    rows = torch.arange(B)
    inputs[rows, depth], inputs[rows, depth + 1], inputs[:, -1] = key, value, key
    roles[rows, depth], roles[rows, depth + 1], roles[:, -1] = ROLE_KEY, ROLE_VALUE, ROLE_QUERY
    targets[:, -1] = value
    return TaskBatch(inputs, targets, roles)


def make_batch(task: str, batch_size: int, *, seq_len: int, vocab_size: int,
               generator: torch.Generator, num_pairs: int = 8, query_start: int | None = None,
               num_queries: int | None = None, gap_power: float | None = 0.01) -> TaskBatch:
    """Dispatch on the task name (``"mqar"`` or ``"niah"``), for the training script."""
    if task == "mqar":
        return mqar(batch_size, seq_len, num_pairs, vocab_size, generator=generator,
                    num_queries=num_queries, query_start=query_start, gap_power=gap_power)
    if task == "niah":
        return needle_in_haystack(batch_size, seq_len, vocab_size, generator=generator)
    raise ValueError(f"task must be 'mqar' or 'niah', got {task!r}")
