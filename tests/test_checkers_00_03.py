"""Every checker of notebooks 00-03: fails on the unsolved stub, fails on a plausible wrong
answer, passes on a correct solution (the solutions live here, not in the package)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from checker_harness import (
    assert_solution_passes,
    assert_stub_fails,
    assert_wrong_answers_fail,
    stub,
)

import dma_ref
from dma_ref.check import nb00, nb01, nb02, nb03

# ---------------------------------------------------------------------------------------------
# Correct solutions
# ---------------------------------------------------------------------------------------------

def sliding_window_ok(N, window):
    p = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    return (j <= p) & (p - j < window)


def kept_keys_ok(s, window, p):
    past = s[: p + 1]
    # rank by (s_j, j) descending: sort key tuples in Python
    order = sorted(range(p + 1), key=lambda j: (past[j].item(), j), reverse=True)
    return sorted(order[:window])


def stable_softmax_ok(x):
    z = x - x.max(dim=-1, keepdim=True).values
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)


def causal_mask_ok(Q, K):
    return torch.arange(K)[None, :] <= torch.arange(K - Q, K)[:, None]


def gqa_ok(q, k, v):
    G = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(G, dim=1)
    v = v.repeat_interleave(G, dim=1)
    p = stable_softmax_ok(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5)
    return p @ v


def scores_ok(v, delta, A):
    B, Hkv, K, D = v.shape
    x = v.permute(0, 2, 1, 3).reshape(B, K, Hkv * D) @ delta      # [B, K, Hkv]
    return torch.exp(A * F.softplus(x)).transpose(1, 2)


def row_mask_ok(s, window):
    B, H, K = s.shape
    out = torch.zeros(B, H, K, K, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for p in range(K):
                order = sorted(range(p + 1), key=lambda j: (s[b, h, j].item(), j), reverse=True)
                out[b, h, p, order[:window]] = True
    return out


def lifetimes_ok(s, window):
    keep = row_mask_ok(s, window)                                  # [B, H, K, K]
    K = s.shape[-1]
    j = torch.arange(K)
    return j + keep.sum(-2)          # kept rows of column j are the contiguous run j .. e_j - 1


def naive_dma_ok(q, k, v, s, window, mode):
    from dma_ref import dma_mask
    Hq, Hkv = q.shape[1], k.shape[1]
    G = Hq // Hkv
    keep = dma_mask(s, window, q_len=q.shape[2], mode=mode).repeat_interleave(G, 1)
    logits = q @ k.repeat_interleave(G, 1).transpose(-1, -2) * q.shape[-1] ** -0.5
    logits = logits + s.repeat_interleave(G, 1)[:, :, None, :]
    logits = logits.masked_fill(~keep, float("-inf"))
    m = logits.max(-1, keepdim=True).values
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = torch.exp(logits - m)
    denom = e.sum(-1, keepdim=True)
    p = e / torch.where(denom > 0, denom, torch.ones_like(denom))
    return p @ v.repeat_interleave(G, 1)


def dead_keys_ok(s, window, mode):
    from dma_ref import dma_mask
    return ~dma_mask(s, window, mode=mode).any(-2)


def score_grad_ok(dlogits, Hkv):
    B, Hq, Q, K = dlogits.shape
    return dlogits.reshape(B, Hkv, Hq // Hkv, Q, K).sum((2, 3))


# ---------------------------------------------------------------------------------------------
# Plausible wrong answers
# ---------------------------------------------------------------------------------------------

def sliding_window_off_by_one(N, window):
    p = torch.arange(N)[:, None]
    j = torch.arange(N)[None, :]
    return (j <= p) & (p - j <= window)


def kept_keys_topk(s, window, p):
    # torch.topk leaves tie order undefined: not the rule
    return sorted(torch.topk(s[: p + 1], min(window, p + 1)).indices.tolist())


def kept_keys_not_causal(s, window, p):
    order = sorted(range(len(s)), key=lambda j: (s[j].item(), j), reverse=True)
    return sorted(j for j in order[:window] if j <= p)


def softmax_naive(x):
    e = torch.exp(x)
    return e / e.sum(dim=-1, keepdim=True)


def softmax_library(x):
    return torch.softmax(x, dim=-1)


def causal_mask_top_left(Q, K):
    return torch.arange(K)[None, :] <= torch.arange(Q)[:, None]


def gqa_wrong_grouping(q, k, v):
    G = q.shape[1] // k.shape[1]
    k = k.repeat(1, G, 1, 1)         # head h reads KV head h % Hkv instead of h // G
    v = v.repeat(1, G, 1, 1)
    return stable_softmax_ok(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5) @ v


def scores_no_softplus(v, delta, A):
    B, Hkv, K, D = v.shape
    x = v.permute(0, 2, 1, 3).reshape(B, K, Hkv * D) @ delta
    return torch.exp(A * x).transpose(1, 2)


def row_mask_topk(s, window):
    B, H, K = s.shape
    out = torch.zeros(B, H, K, K, dtype=torch.bool)
    for p in range(K):
        idx = torch.topk(s[..., : p + 1], min(window, p + 1), dim=-1).indices
        out[:, :, p].scatter_(-1, idx, True)
    return out


def row_mask_earlier_wins(s, window):
    B, H, K = s.shape
    out = torch.zeros(B, H, K, K, dtype=torch.bool)
    for b in range(B):
        for h in range(H):
            for p in range(K):
                order = sorted(range(p + 1), key=lambda j: (-s[b, h, j].item(), j))
                out[b, h, p, order[:window]] = True
    return out


def lifetimes_last_kept(s, window):
    return lifetimes_ok(s, window) - 1            # the last keeping position, not the first drop


def naive_dma_without_bias(q, k, v, s, window, mode):
    from dma_ref import dense_attention, dma_mask
    G = q.shape[1] // k.shape[1]
    keep = dma_mask(s, window, q_len=q.shape[2], mode=mode).repeat_interleave(G, 1)
    return dense_attention(q, k, v, mask=keep)


def naive_dma_nan_rows(q, k, v, s, window, mode):
    from dma_ref import dma_mask
    G = q.shape[1] // k.shape[1]
    keep = dma_mask(s, window, q_len=q.shape[2], mode=mode).repeat_interleave(G, 1)
    logits = q @ k.repeat_interleave(G, 1).transpose(-1, -2) * q.shape[-1] ** -0.5
    logits = (logits + s.repeat_interleave(G, 1)[:, :, None, :]).masked_fill(~keep, float("-inf"))
    return torch.softmax(logits, -1) @ v.repeat_interleave(G, 1)


def dead_keys_global_set(s, window, mode):
    # "keys outside the global top-w get no gradient": wrong in row mode and for causal rows
    from dma_ref import dma_mask
    return ~dma_mask(s, window, mode="global", causal=False).any(-2)


def score_grad_mean(dlogits, Hkv):
    B, Hq, Q, K = dlogits.shape
    return dlogits.reshape(B, Hkv, Hq // Hkv, Q, K).sum(3).mean(2)


def score_grad_modulo_groups(dlogits, Hkv):
    B, Hq, Q, K = dlogits.shape
    return dlogits.reshape(B, Hq // Hkv, Hkv, Q, K).sum((1, 3))


def softmax_special(x):
    return torch.special.softmax(x, -1)


def softmax_from_log_softmax(x):
    return x.log_softmax(-1).exp()


def scores_package(v, delta, A):
    return dma_ref.dma_scores(v, delta, A)


def kept_keys_package(s, window, p):
    return dma_ref.dma_mask(s[None, None], window)[0, 0, p].nonzero().flatten().tolist()


def row_mask_package(s, window):
    return dma_ref.dma_mask(s, window)


def lifetimes_package(s, window):
    from dma_ref.lifetimes import key_lifetimes
    return key_lifetimes(s, window)


def naive_dma_package(q, k, v, s, window, mode):
    return dma_ref.naive_dma_attention(q, k, v, s, window, mode=mode)


CASES = [
    (nb00.check_sliding_window, sliding_window_ok, [sliding_window_off_by_one]),
    (nb00.check_kept_keys, kept_keys_ok, [kept_keys_topk, kept_keys_not_causal,
                                                kept_keys_package]),
    (nb01.check_stable_softmax, stable_softmax_ok, [softmax_naive, softmax_library, softmax_special,
                                                     softmax_from_log_softmax]),
    (nb01.check_causal_mask, causal_mask_ok, [causal_mask_top_left]),
    (nb01.check_gqa_attention, gqa_ok, [gqa_wrong_grouping]),
    (nb02.check_scores, scores_ok, [scores_no_softplus, scores_package]),
    (nb02.check_row_mask, row_mask_ok, [row_mask_topk, row_mask_earlier_wins, row_mask_package]),
    (nb02.check_lifetimes, lifetimes_ok, [lifetimes_last_kept, lifetimes_package]),
    (nb03.check_naive_dma, naive_dma_ok, [naive_dma_without_bias, naive_dma_nan_rows,
                                          naive_dma_package]),
    (nb03.check_dead_keys, dead_keys_ok, [dead_keys_global_set]),
    (nb03.check_score_grad, score_grad_ok, [score_grad_mean, score_grad_modulo_groups]),
]
IDS = [c[0].__name__ for c in CASES]


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_stub_fails(checker, solution, wrongs):
    assert_stub_fails(checker)


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_wrong_answers_fail(checker, solution, wrongs, rng):
    assert_wrong_answers_fail(checker, wrongs, rng)


@pytest.mark.parametrize("checker, solution, wrongs", CASES, ids=IDS)
def test_correct_solution_passes(checker, solution, wrongs, rng):
    assert_solution_passes(checker, solution, rng)


def test_softmax_guard_is_restored():
    nb01.check_stable_softmax(stub)
    nb01.check_stable_softmax(softmax_library)
    x = torch.randn(3, 4)
    torch.testing.assert_close(torch.softmax(x, -1), x.softmax(-1))
    torch.testing.assert_close(F.softmax(x, -1), x.exp() / x.exp().sum(-1, keepdim=True))
    assert "softmax" not in torch.Tensor.__dict__ and "log_softmax" not in torch.Tensor.__dict__
    torch.testing.assert_close(torch.special.softmax(x, -1), x.softmax(-1))


def test_package_guards_are_restored():
    nb02.check_row_mask(row_mask_package)
    nb03.check_naive_dma(naive_dma_package)
    from dma_ref import mask, naive
    assert dma_ref.dma_mask is mask.dma_mask and dma_ref.dma_mask.__module__ == "dma_ref.mask"
    assert dma_ref.naive_dma_attention is naive.naive_dma_attention
    assert naive.naive_dma_attention.__module__ == "dma_ref.naive"


def test_checkers_leave_global_rng_alone():
    torch.manual_seed(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    nb02.check_row_mask(row_mask_ok)
    nb00.check_kept_keys(kept_keys_ok)
    torch.testing.assert_close(torch.rand(3), a)
