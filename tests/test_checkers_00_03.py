"""Every checker of notebooks 00-03: fails on the unsolved stub, fails on a plausible wrong
answer or a call to the package's own solution, passes on the solved notebook's solution
(``dma_ref.course.solutions``: each solution is written once, in course/source/)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from checker_harness import checker_tests, stub

import dma_ref
from dma_ref.check import nb00, nb01, nb02, nb03
from dma_ref.course import solutions

# ---------------------------------------------------------------------------------------------
# Correct solutions: the solved notebooks' own (course/source/NN_*.ipynb), written once there
# ---------------------------------------------------------------------------------------------

S00, S01, S02, S03 = (solutions(n) for n in ("00", "01", "02", "03"))
sliding_window_ok = S00.sliding_window_mask      # (tests/test_grade.py pastes these two)
kept_keys_ok = S00.kept_keys


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
    return S01.stable_softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5) @ v


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


def lifetimes_length(e, window):
    return (e - torch.arange(len(e))).float()      # how long a key lives, not when it goes


def lifetimes_negated(e, window):
    return -e.float()                               # the order reversed


def lifetimes_as_ints(e, window):
    return e                                        # the right order, but not float scores


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


def lifetimes_search(e, window):
    """Tries random scores until the package's lifetimes agree: switched off by the checker."""
    from dma_ref import key_lifetimes
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        s = torch.randn(len(e), generator=g)
        if torch.equal(key_lifetimes(s[None, None], window)[0, 0], e):
            return s
    return s


def naive_dma_package(q, k, v, s, window, mode):
    return dma_ref.naive_dma_attention(q, k, v, s, window, mode=mode)


CASES = [
    (nb00.check_sliding_window, S00.sliding_window_mask, [sliding_window_off_by_one]),
    (nb00.check_kept_keys, S00.kept_keys, [kept_keys_topk, kept_keys_not_causal,
                                                kept_keys_package]),
    (nb01.check_stable_softmax, S01.stable_softmax, [softmax_naive, softmax_library, softmax_special,
                                                     softmax_from_log_softmax]),
    (nb01.check_causal_mask, S01.causal_mask, [causal_mask_top_left]),
    (nb01.check_gqa_attention, S01.gqa_attention, [gqa_wrong_grouping]),
    (nb02.check_scores, S02.scores, [scores_no_softplus, scores_package]),
    (nb02.check_row_mask, S02.row_mask, [row_mask_topk, row_mask_earlier_wins, row_mask_package]),
    (nb02.check_lifetimes, S02.scores_from_lifetimes, [lifetimes_length, lifetimes_negated,
                                                         lifetimes_as_ints, lifetimes_search]),
    (nb03.check_naive_dma, S03.naive_dma, [naive_dma_without_bias, naive_dma_nan_rows,
                                          naive_dma_package]),
    (nb03.check_dead_keys, S03.dead_keys, [dead_keys_global_set]),
    (nb03.check_score_grad, S03.score_grad, [score_grad_mean, score_grad_modulo_groups]),
]
test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes = checker_tests(CASES)


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
    nb02.check_row_mask(S02.row_mask)
    nb00.check_kept_keys(S00.kept_keys)
    torch.testing.assert_close(torch.rand(3), a)
