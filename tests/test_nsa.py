"""NSA (dma_ref.nn.nsa) against a float64 per-query loop written from the paper's description
(compressed, selected and sliding branches, gated): awkward sizes, GQA, causality, gradients,
the key sets it reports, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from dma_ref.nn import ModelConfig, NativeSparseAttention, NSASizes, TinyLM, nsa_sizes
from dma_ref.nn.kinds import kept


def softmax_read(q: torch.Tensor, keys: list[torch.Tensor], values: list[torch.Tensor]):
    """``(o, p)``: softmax attention of one query over a list of keys (o = 0 for no key)."""
    if not keys:
        return torch.zeros_like(q), []
    logits = [float(q @ k) / math.sqrt(len(q)) for k in keys]
    mx = max(logits)
    w = [math.exp(x - mx) for x in logits]
    p = [x / sum(w) for x in w]
    return sum(pi * v for pi, v in zip(p, values)), p


def compress_block(m: NativeSparseAttention, x: torch.Tensor, pos: str, mlp: str) -> torch.Tensor:
    """One compressed key or value: ``W2 silu(W1 flatten(x + pos) + b1) + b2`` (x ``[l, D]``)."""
    W = {n: p.detach().double() for n, p in m.named_parameters()}
    z = (x + W[pos]).flatten()
    h = W[f"{mlp}.0.weight"] @ z + W[f"{mlp}.0.bias"]
    h = h * torch.sigmoid(h)
    return W[f"{mlp}.2.weight"] @ h + W[f"{mlp}.2.bias"]


def loop_nsa(m: NativeSparseAttention, q, k, v, g) -> torch.Tensor:
    """o ``[B, Hq, N, D]`` query by query, in float64."""
    q, k, v, g = (t.detach().double() for t in (q, k, v, g))
    B, H, N, D = q.shape
    Hkv = k.shape[1]
    G = H // Hkv
    l, d, L, n = m.sizes.block, m.sizes.stride, m.sizes.select_block, m.sizes.n_select
    o = torch.zeros(B, H, N, D, dtype=torch.float64)
    n_cmp = (N - l) // d + 1 if N >= l else 0
    for b in range(B):
        for kv in range(Hkv):
            kc = [compress_block(m, k[b, kv, i * d:i * d + l], "cmp_pos_k", "cmp_k") for i in range(n_cmp)]
            vc = [compress_block(m, v[b, kv, i * d:i * d + l], "cmp_pos_v", "cmp_v") for i in range(n_cmp)]
            for t in range(N):
                done = [i for i in range(n_cmp) if i * d + l - 1 <= t]
                heads = range(kv * G, (kv + 1) * G)
                o_cmp, imp = {}, {}
                for h in heads:
                    o_cmp[h], p = softmax_read(q[b, h, t], [kc[i] for i in done], [vc[i] for i in done])
                    for i, pi in zip(done, p):
                        for j in range(i * d // L, (i * d + l - 1) // L + 1):
                            imp[j] = imp.get(j, 0.0) + pi
                past = [j for j in range(math.ceil(N / L)) if j * L <= t]
                forced = {0, t // L}
                ranked = sorted(past, key=lambda j: (math.inf if j in forced else imp.get(j, 0.0), j),
                                reverse=True)
                blocks = ranked[:n]
                sel = sorted(j for j in range(t + 1) if j // L in blocks)
                win = [j for j in range(t + 1) if j > t - m.window]
                for h in heads:
                    o_slc, _ = softmax_read(q[b, h, t], [k[b, kv, j] for j in sel], [v[b, kv, j] for j in sel])
                    o_win, _ = softmax_read(q[b, h, t], [k[b, kv, j] for j in win], [v[b, kv, j] for j in win])
                    o[b, h, t] = g[b, h, t, 0] * o_cmp[h] + g[b, h, t, 1] * o_slc + g[b, h, t, 2] * o_win
    return o


CASES = [  # (Hq, Hkv, N, window, sizes)
    (2, 2, 13, 4, NSASizes(block=4, stride=2, select_block=4, n_select=2)),
    (4, 2, 17, 3, NSASizes(block=3, stride=2, select_block=5, n_select=3)),     # nothing divides
    (4, 1, 9, 16, NSASizes(block=2, stride=1, select_block=2, n_select=8)),     # w >= N
    (2, 1, 3, 2, NSASizes(block=4, stride=4, select_block=4, n_select=1)),      # N < block
    (2, 2, 20, 5, nsa_sizes(32)),
]


def random_nsa(rng, H, Hkv, window, sizes, D=4) -> NativeSparseAttention:
    m = NativeSparseAttention(H * D, H, Hkv, window=window, sizes=sizes).double()
    for p in m.parameters():
        p.data = torch.randn(p.shape, generator=rng, dtype=torch.float64) * 0.7
    return m


@pytest.mark.parametrize("H, Hkv, N, window, sizes", CASES)
def test_nsa_matches_loop_reference(rng, H, Hkv, N, window, sizes):
    m = random_nsa(rng, H, Hkv, window, sizes)
    x = torch.randn(2, N, H * 4, generator=rng, dtype=torch.float64)
    q, k, v, g = m.project(x)
    assert g.shape == (2, H, N, 3) and ((g > 0) & (g < 1)).all()
    torch.testing.assert_close(m.attend(q, k, v, g), loop_nsa(m, q, k, v, g), rtol=1e-9, atol=1e-9,
                               msg=lambda s: f"{s}\ngenerator seed {rng.initial_seed()}")


def test_nsa_selection_follows_importance(rng):
    """Hand-built importances: forced blocks first, then by importance, ties to the later block."""
    from dma_ref.nn.nsa import select_blocks

    sizes = NSASizes(block=2, stride=2, select_block=2, n_select=3)
    N = 10                                   # 5 selection blocks, 5 compressed blocks (1:1)
    imp = torch.zeros(1, 1, N, 5)
    imp[0, 0, 9] = torch.tensor([0.0, 0.5, 0.1, 0.1, 0.3])
    sel = select_blocks(imp, sizes)[0, 0]
    assert sel[9].tolist() == [True, True, False, False, True]       # 0 and 4 forced, then 1
    imp[0, 0, 9] = torch.tensor([0.0, 0.1, 0.1, 0.1, 0.0])
    assert select_blocks(imp, sizes)[0, 0, 9].tolist() == [True, False, False, True, True]
    assert select_blocks(imp, sizes)[0, 0, 0].tolist() == [True, False, False, False, False]


def test_nsa_is_causal(rng):
    m = random_nsa(rng, 4, 2, 5, nsa_sizes(24), D=8)
    N, t = 40, 22
    x = torch.randn(2, N, 32, generator=rng, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, N - t - 1, 32, generator=rng, dtype=torch.float64) * 3
    y, y2 = m(x), m(x2)
    torch.testing.assert_close(y[:, :t + 1], y2[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(y[:, t + 1:], y2[:, t + 1:])


def test_nsa_sizes_scale_with_the_window():
    assert nsa_sizes(64) == NSASizes(block=8, stride=4, select_block=16, n_select=4)
    assert nsa_sizes(512) == NSASizes(block=64, stride=32, select_block=128, n_select=4)
    for w in (8, 16, 32, 64, 128):
        s = nsa_sizes(w)
        assert s.select_block == 2 * s.block and s.block == 2 * s.stride or s.stride == 1
        assert s.n_select * s.select_block >= w


def test_nsa_in_the_model_gradients(rng):
    model = TinyLM(ModelConfig(attn="nsa", d_model=32, n_heads=4, n_kv_heads=2, window=8,
                               vocab_size=32))
    tokens = torch.randint(0, 32, (2, 30), generator=rng)
    model(tokens).logsumexp(-1).sum().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"{n}, seed {rng.initial_seed()}"
    attn = model.blocks[0].attn
    for name in ("gate.weight", "cmp_k.0.weight", "cmp_pos_v", "q_proj.weight"):
        assert attn.get_parameter(name).grad.abs().sum() > 0, name


def test_nsa_kept_key_sets(rng):
    m = random_nsa(rng, 2, 1, 4, NSASizes(block=4, stride=2, select_block=4, n_select=2))
    x = torch.randn(1, 12, 8, generator=rng, dtype=torch.float64)
    q, k, _, _ = m.project(x)
    sets = m.kept(q, k)
    assert set(sets) == {"compressed", "selected", "window"}
    causal = torch.ones(12, 12, dtype=torch.bool).tril()
    for name, s in sets.items():
        assert s.shape == (1, 1, 12, 12) and not (s[0, 0] & ~causal).any(), name
    # Compressed blocks end at 3, 5, 7, 9, 11: query 6 reads tokens 0..5 through them.
    assert sets["compressed"][0, 0, 6].tolist() == [True] * 6 + [False] * 6
    assert sets["compressed"][0, 0, 2].sum() == 0
    assert sets["selected"][0, 0].sum(-1).le(2 * 4).all()
    assert sets["selected"][0, 0, 11, 8:].all()                       # its own block


def test_nsa_bad_input_and_explorer_refusal():
    with pytest.raises(ValueError, match="stride"):
        NSASizes(block=2, stride=3, select_block=4, n_select=2)
    with pytest.raises(ValueError, match="n_select"):
        NSASizes(block=2, stride=1, select_block=4, n_select=0)
    with pytest.raises(ValueError, match="num_kv_heads"):
        NativeSparseAttention(32, 4, 3)
    m = NativeSparseAttention(32, 4, window=8)
    with pytest.raises(ValueError, match=r"\[B, N, C=32\]"):
        m(torch.randn(2, 5, 31))
    with pytest.raises(NotImplementedError, match="kept"):
        m.keep(torch.zeros(1, 4, 5))
    with pytest.raises(ValueError, match="q and k"):
        kept("nsa", torch.zeros(1, 1, 5), 2)
    model = TinyLM(ModelConfig(attn="nsa", d_model=32, n_heads=4, window=8, vocab_size=32))
    with pytest.raises(NotImplementedError, match="NSA"):
        model.attention_maps(torch.zeros(1, 10, dtype=torch.int64))
