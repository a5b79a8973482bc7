"""Bad input raises ValueError/TypeError naming the argument and the expected shape (DESIGN 4)."""

from __future__ import annotations

import math
import re

import pytest
import torch

from dma_ref import (
    DMAAttention,
    dense_attention,
    dma_mask,
    dma_scores,
    key_lifetimes,
    naive_dma_attention,
)

B, Hq, Hkv, Q, K, D = 2, 4, 2, 5, 7, 8


def good():
    """Valid ``q, k, v, s`` for the shapes above."""
    return (torch.randn(B, Hq, Q, D), torch.randn(B, Hkv, K, D), torch.randn(B, Hkv, K, D),
            torch.randn(B, Hkv, K))


def raises(exc, *words):
    """``pytest.raises`` whose message must contain every word (regex-escaped)."""
    return pytest.raises(exc, match="(?s)" + "".join(f"(?=.*{re.escape(w)})" for w in words))


def replace(args, index, value):
    args = list(args)
    args[index] = value
    return args


# Each case: (which of q, k, v to replace, the bad tensor, exception, words the message needs).
QKV_CASES = [
    (0, torch.randn(Hq, Q, D), ValueError, ["q", "[B, Hq, Q, D]"]),
    (1, torch.randn(B, Hkv, K), ValueError, ["k", "[B, Hkv, K, D]"]),
    (2, torch.randn(B, Hkv, K, D, 1), ValueError, ["v", "[B, Hkv, K, D]"]),
    (2, torch.randn(B, Hkv, K + 1, D), ValueError, ["v", "[B, Hkv, K, D]"]),        # k, v differ
    (1, torch.randn(B + 1, Hkv, K, D), ValueError, ["k", "[B, Hkv, K, D]"]),        # batch
    (1, torch.randn(B, Hkv, K, D + 1), ValueError, ["k", "[B, Hkv, K, D]"]),        # head dim
    (0, torch.randn(B, 3, Q, D), ValueError, ["Hq", "Hkv", "multiple"]),             # GQA
    (1, torch.randn(B, Hkv, K, D, dtype=torch.float64), TypeError, ["k", "dtype"]),
    (0, torch.randint(0, 3, (B, Hq, Q, D)), TypeError, ["q", "float"]),
    (0, [[1.0]], TypeError, ["q", "[B, Hq, Q, D]"]),
    (0, torch.randn(B, Hq, Q, 0), ValueError, ["q", "head dim", "[B, Hq, Q, D]"]),   # D = 0
]


@pytest.mark.parametrize("index,bad,exc,words", QKV_CASES)
def test_dense_attention_rejects_bad_qkv(index, bad, exc, words):
    q, k, v, _ = good()
    with raises(exc, *words):
        dense_attention(*replace((q, k, v), index, bad))


@pytest.mark.parametrize("index,bad,exc,words", QKV_CASES)
def test_naive_dma_attention_rejects_bad_qkv(index, bad, exc, words):
    q, k, v, s = good()
    with raises(exc, *words):
        naive_dma_attention(*replace((q, k, v), index, bad), s, 3)


def test_dense_attention_rejects_bad_bias_and_mask():
    q, k, v, _ = good()
    with raises(ValueError, "bias", "[B, Hq, Q, K]"):
        dense_attention(q, k, v, bias=torch.randn(B, Hq, K, Q))
    with raises(ValueError, "bias", "[B, Hq, Q, K]"):
        dense_attention(q, k, v, bias=torch.randn(Q, K))
    with raises(ValueError, "mask", "[B, Hq, Q, K]"):
        dense_attention(q, k, v, mask=torch.ones(B, Hkv, Q, K, dtype=torch.bool))
    with raises(TypeError, "mask", "bool"):
        dense_attention(q, k, v, mask=torch.ones(B, Hq, Q, K))
    with raises(TypeError, "scale"):
        dense_attention(q, k, v, scale="0.5")


@pytest.mark.parametrize("bad_s,exc,words", [
    (torch.randn(B, Hkv, K, 1), ValueError, ["s", "[B, Hkv, K]"]),
    (torch.randn(B, Hq, K), ValueError, ["s", "[B, Hkv, K]"]),          # per query head: wrong
    (torch.randn(B, Hkv, K - 1), ValueError, ["s", "[B, Hkv, K]"]),
    (torch.randint(0, 3, (B, Hkv, K)), TypeError, ["s", "float"]),
    (torch.full((B, Hkv, K), math.nan), ValueError, ["s", "NaN"]),
])
def test_naive_dma_attention_rejects_bad_scores(bad_s, exc, words):
    q, k, v, _ = good()
    with raises(exc, *words):
        naive_dma_attention(q, k, v, bad_s, 3)


@pytest.mark.parametrize("window,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                        (2.0, TypeError), (True, TypeError), (None, TypeError)])
def test_every_function_rejects_a_bad_window(window, exc):
    q, k, v, s = good()
    for call in (lambda: naive_dma_attention(q, k, v, s, window),
                 lambda: dma_mask(s, window),
                 lambda: key_lifetimes(s, window)):
        with raises(exc, "window"):
            call()


def test_bad_mode_is_rejected():
    q, k, v, s = good()
    with raises(ValueError, "mode", "row", "global"):
        naive_dma_attention(q, k, v, s, 3, mode="local")
    with raises(ValueError, "mode", "row", "global"):
        dma_mask(s, 3, mode="Row")


def test_nan_scores_are_rejected():
    s = torch.randn(B, Hkv, K)
    s[1, 0, 3] = math.nan
    with raises(ValueError, "s", "NaN"):
        dma_mask(s, 3)
    with raises(ValueError, "s", "NaN"):
        key_lifetimes(s, 3)


def test_plus_infinite_scores_are_rejected():
    # +inf is not a real score (the exp form overflows to it in fp32 once A * softplus(x) > 88).
    # Accepted, it silently zeroes every row that keeps the key: lse = inf, then inf - inf.
    q, k, v, s = good()
    s[0, 1, 2] = math.inf
    with raises(ValueError, "s", "inf"):
        naive_dma_attention(q, k, v, s, 3)


@pytest.mark.parametrize("q_len", [K + 1, 0, -1, 2.5, True])
def test_dma_mask_rejects_a_bad_q_len(q_len):
    with raises(ValueError, "q_len", f"K={K}"):
        dma_mask(torch.randn(B, Hkv, K), 3, q_len=q_len)


def test_naive_rejects_more_queries_than_keys():
    # The caller passed q (there is no q_len argument here): the message must name q and its
    # expected shape, like every other shape error.
    _, k, v, s = good()
    q = torch.randn(B, Hq, K + 1, D)
    with pytest.raises(ValueError, match=r"(?s)(?=.*\bq\b)(?=.*\[B, Hq, Q, D\])"):
        naive_dma_attention(q, k, v, s, 3)


def test_mismatched_devices_are_rejected():
    # The meta device stands in for a second device on a CPU-only machine.
    q, k, v, s = good()
    with raises(ValueError, "k", "device"):
        dense_attention(q, k.to("meta"), v)
    with raises(ValueError, "v", "device"):
        naive_dma_attention(q, k, v.to("meta"), s, 3)
    with raises(ValueError, "s", "device"):
        naive_dma_attention(q, k, v, s.to("meta"), 3)


@pytest.mark.parametrize("bad", [torch.randn(Hkv, K), torch.randn(1, B, Hkv, K), [[0.0]]])
def test_mask_and_lifetimes_reject_bad_score_ranks(bad):
    exc = TypeError if isinstance(bad, list) else ValueError
    for fn in (dma_mask, key_lifetimes):
        with raises(exc, "s", "[B, Hkv, K]"):
            fn(bad, 3)


def test_dma_scores_rejects_bad_shapes_and_form():
    v = torch.randn(B, Hkv, K, D)
    delta, A = torch.randn(Hkv * D, Hkv), torch.randn(Hkv)
    with raises(ValueError, "v", "[B, Hkv, K, D]"):
        dma_scores(v[0], delta, A)
    with raises(ValueError, "delta", "[Hkv*D, Hkv]", f"[{Hkv * D}, {Hkv}]"):
        dma_scores(v, torch.randn(D, Hkv), A)
    with raises(ValueError, "delta", "[Hkv*D, Hkv]"):
        dma_scores(v, delta.T.contiguous(), A)
    with raises(ValueError, "delta", "[Hkv*D, Hkv]"):
        dma_scores(v, delta[None], A)
    with raises(ValueError, "A", "[Hkv]", f"[{Hkv}]"):
        dma_scores(v, delta, torch.randn(Hkv + 1))
    with raises(ValueError, "A", "[Hkv]"):
        dma_scores(v, delta, torch.tensor(0.02))
    with raises(ValueError, "form", "exp", "log"):
        dma_scores(v, delta, A, form="linear")
    with raises(TypeError, "delta"):
        dma_scores(v, delta.numpy(), A)


def test_module_rejects_bad_input_and_configuration():
    m = DMAAttention(16, num_heads=4, num_kv_heads=2, window=3)
    with raises(ValueError, "x", "[B, N, C=16]"):
        m(torch.randn(2, 5, 12))
    with raises(ValueError, "x", "[B, N, C=16]"):
        m(torch.randn(5, 16))
    with raises(ValueError, "num_heads", "num_kv_heads"):
        DMAAttention(16, num_heads=4, num_kv_heads=3)
    with raises(ValueError, "backend"):
        DMAAttention(16, num_heads=4, backend="cuda")
    with raises(ValueError, "form"):
        DMAAttention(16, num_heads=4, form="linear")
    with raises(ValueError, "head_dim"):
        DMAAttention(12, num_heads=4, head_dim=3, rope=True)   # RoPE needs an even head dim
    with raises(TypeError, "x", "torch.Tensor"):
        m([[1.0] * 16])
    with raises(ValueError, "window"):
        DMAAttention(16, num_heads=4, window=0)                 # checked at construction
    with raises(ValueError, "mode"):
        DMAAttention(16, num_heads=4, mode="local")
    with raises(TypeError, "causal"):
        DMAAttention(16, num_heads=4, causal="yes")


def test_naive_rejects_a_non_bool_causal_and_takes_zero_query_rows():
    q, k, v, s = good()
    with raises(TypeError, "causal", "bool"):
        naive_dma_attention(q, k, v, s, 3, causal="no")
    o, lse = naive_dma_attention(q[:, :, :0], k, v, s, 3, return_lse=True)
    assert o.shape == (B, Hq, 0, D) and lse.shape == (B, Hq, 0)


def test_kernel_mask_builders_validate_their_input():
    from dma_ref.kernels import build_plan, global_lifetimes
    s = torch.randn(B, Hkv, K)
    with raises(ValueError, "mode"):
        build_plan(s, 3, K, mode="bogus")
    with raises(ValueError, "window"):
        build_plan(s, 0, K)
    with raises(ValueError, "q_len"):
        build_plan(s, 3, K + 1)
    s[0, 0, 1] = math.nan
    with raises(ValueError, "s", "NaN"):
        global_lifetimes(s, 3)


def test_module_rejects_x_of_another_dtype():
    # x in another dtype than the parameters: a ValueError/TypeError naming x, not a
    # RuntimeError from inside a matmul.
    m = DMAAttention(16, num_heads=4, num_kv_heads=2, window=3)
    with pytest.raises((ValueError, TypeError), match=r"\bx\b"):
        m(torch.randn(2, 5, 16, dtype=torch.float64))
