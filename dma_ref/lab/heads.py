"""What the DMA heads of a trained model learned, measured over many held-out sequences.

    score_auc           per (layer, KV head): how well the score s_j separates two sets of tokens
                        (e.g. the pair tokens a query needs from the fillers), as an AUC
    kept_share          per (layer, KV head): at the query positions, the share of a set of
                        tokens (e.g. the pair tokens) that the row keeps
    accuracy_at_window  the held-out accuracy of the same weights evaluated with another window
    answers             the model's prediction and the target at every query of a sequence

The notebooks assert their claims about the shipped checkpoint with these numbers.
"""

from __future__ import annotations

import torch

from ..nn import TinyLM
from ..nn.kinds import kept
from .tasks import IGNORE, ROLE_FILLER, ROLE_QUERY, ROLE_VALUE, TaskBatch
from .train.loop import accuracy, set_window


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """``P(a > b) + P(a = b) / 2`` for a drawn from ``pos`` and b from ``neg`` (1-dim float
    tensors): 1 when every positive scores above every negative, 0.5 for no separation. Computed
    from ranks (Mann-Whitney U), O(n log n)."""
    if pos.numel() == 0 or neg.numel() == 0:
        raise ValueError("auc needs at least one positive and one negative value")
    both = torch.cat([pos, neg]).double()
    order = torch.argsort(both, stable=True)
    ranks = torch.empty_like(both)
    ranks[order] = torch.arange(1, len(both) + 1, dtype=torch.float64)
    # Average the ranks of equal values, so that ties count one half.
    uniq, inverse = torch.unique(both, return_inverse=True)
    mean_rank = torch.zeros(len(uniq), dtype=torch.float64).index_add_(0, inverse, ranks)
    mean_rank /= torch.bincount(inverse, minlength=len(uniq)).double()
    r_pos = mean_rank[inverse[:len(pos)]].sum()
    n_pos, n_neg = len(pos), len(neg)
    return float((r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score_auc(maps: dict, roles: torch.Tensor, positive: torch.Tensor | None = None,
              negative: torch.Tensor | None = None) -> torch.Tensor:
    """float64 ``[L, Hkv]``: for each layer and KV head, the AUC of the scores ``s_j`` of the
    ``positive`` tokens against the ``negative`` ones, pooled over the batch. Defaults: the pair
    tokens (keys and values) against the fillers. ``maps``: ``model.attention_maps(tokens)``;
    roles int8 ``[B, N]``; positive, negative bool ``[B, N]``."""
    roles = roles.cpu()
    pos = roles <= ROLE_VALUE if positive is None else positive.cpu()
    neg = roles == ROLE_FILLER if negative is None else negative.cpu()
    out = []
    for layer in maps["layers"]:
        s = layer["s"].float().cpu()                                  # [B, Hkv, N]
        out.append([auc(s[:, h][pos], s[:, h][neg]) for h in range(s.shape[1])])
    return torch.tensor(out, dtype=torch.float64)


def kept_share(maps: dict, roles: torch.Tensor, attn: str, window: int,
               tokens: torch.Tensor | None = None) -> torch.Tensor:
    """float64 ``[L, Hkv]``: at the query positions, the fraction of ``tokens`` (bool ``[B, N]``,
    default the pair tokens) before the query that the row keeps, pooled over queries and
    sequences. 1: every query row keeps every pair token; a sliding window whose reach ends
    before the pairs gives 0."""
    roles = roles.cpu()
    tok = roles <= ROLE_VALUE if tokens is None else tokens.cpu()
    is_query = roles == ROLE_QUERY                                   # [B, N]
    N = roles.shape[1]
    before = torch.ones(N, N, dtype=torch.bool).tril()              # j <= p
    wanted = tok[:, None, :] & before[None] & is_query[:, :, None]  # [B, N(p), N(j)]
    out = []
    for layer in maps["layers"]:
        m = kept(attn, layer["s"].float().cpu(), window)             # [B, Hkv, N, N]
        out.append([float((m[:, h] & wanted).sum() / wanted.sum().clamp(min=1))
                    for h in range(m.shape[1])])
    return torch.tensor(out, dtype=torch.float64)


def accuracy_at_window(model: TinyLM, batch: TaskBatch, window: int) -> float:
    """Held-out accuracy at the queries of ``batch`` with every layer's window set to
    ``window`` (the trained weights unchanged; restored afterwards)."""
    trained = model.cfg.window
    set_window(model, window)
    try:
        return accuracy(model, batch)
    finally:
        set_window(model, trained)


@torch.no_grad()
def answers(model: TinyLM, tokens: torch.Tensor, targets: torch.Tensor) -> list[dict]:
    """The model's answer at every query of ONE sequence: ``[{"position", "key", "target",
    "prediction", "right"}]``. tokens, targets int64 ``[N]``."""
    logits = model(tokens[None])[0]
    out = []
    for p in (targets != IGNORE).nonzero().flatten().tolist():
        pred = int(logits[p].argmax())
        out.append({"position": p, "key": int(tokens[p]), "target": int(targets[p]),
                    "prediction": pred, "right": pred == int(targets[p])})
    return out
