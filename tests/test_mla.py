"""MLA (dma_ref.nn.mla) against a float64 per-query loop written from DeepSeek-V2's equations:
shapes, GQA, causality, gradients, the explorer's view, bad input."""

from __future__ import annotations

import math

import pytest
import torch

from dma_ref.nn import ModelConfig, MultiHeadLatentAttention, TinyLM
from dma_ref.nn.mla import mla_sizes


def rope_row(x: list[float], t: int, base: float) -> list[float]:
    """Rotate-half RoPE of one vector at position t, channel pair (c, c + d/2)."""
    d = len(x)
    half = d // 2
    out = list(x)
    for c in range(half):
        a = t * base ** (-2 * c / d)
        out[c] = x[c] * math.cos(a) - x[c + half] * math.sin(a)
        out[c + half] = x[c + half] * math.cos(a) + x[c] * math.sin(a)
    return out


def loop_mla(m: MultiHeadLatentAttention, x: torch.Tensor) -> torch.Tensor:
    """y ``[B, N, C]`` from the module's weights, one query at a time, in float64."""
    x = x.double()
    W = {n: p.detach().double() for n, p in m.named_parameters()}
    B, N, C = x.shape
    H, Hkv, D, d_R = m.Hq, m.Hkv, m.D, m.d_R
    G = H // Hkv
    y = torch.zeros(B, N, C, dtype=torch.float64)
    for b in range(B):
        c = []
        for j in range(N):
            z = W["kv_down.weight"] @ x[b, j]
            c.append(z / torch.sqrt((z * z).mean() + 1e-6) * W["kv_norm.weight"])
        k_R = [rope_row((W["k_rope.weight"] @ x[b, j]).tolist(), j, m.rope_base) for j in range(N)]
        for t in range(N):
            heads = []
            qt = (W["q_proj.weight"] @ x[b, t]).view(H, D + d_R)
            for h in range(H):
                g = h // G
                q = qt[h, :D].tolist() + rope_row(qt[h, D:].tolist(), t, m.rope_base)
                logits, values = [], []
                for j in range(t + 1):
                    k_nope = (W["k_up.weight"] @ c[j]).view(Hkv, D)[g].tolist()
                    k = k_nope + k_R[j]
                    logits.append(sum(a * b_ for a, b_ in zip(q, k)) / math.sqrt(D + d_R))
                    values.append((W["v_up.weight"] @ c[j]).view(Hkv, D)[g])
                mx = max(logits)
                wts = [math.exp(v - mx) for v in logits]
                heads.append(sum(w / sum(wts) * v for w, v in zip(wts, values)))
            y[b, t] = W["o_proj.weight"] @ torch.cat(heads)
    return y


@pytest.mark.parametrize("H, Hkv, N", [(4, 4, 6), (4, 2, 7), (2, 1, 5)])
def test_mla_matches_loop_reference(rng, H, Hkv, N):
    m = MultiHeadLatentAttention(16, H, Hkv, head_dim=4).double()
    for p in m.parameters():
        p.data = torch.randn(p.shape, generator=rng, dtype=torch.float64) * 0.5
    x = torch.randn(2, N, 16, generator=rng, dtype=torch.float64)
    # dma_ref.rope computes its angles in float32 (so does every kind's RoPE): ~1e-7 apart.
    torch.testing.assert_close(m(x), loop_mla(m, x), rtol=1e-5, atol=1e-6)


def test_mla_shapes_and_sizes(rng):
    m = MultiHeadLatentAttention(64, 4, 2)
    assert (m.d_c, m.d_R, m.D) == (16, 8, 16) == (*mla_sizes(64, 16), 16)
    x = torch.randn(3, 10, 64, generator=rng)
    q, k, v, s = m.project(x)
    assert q.shape == (3, 4, 10, 24) and k.shape == (3, 2, 10, 24) and v.shape == (3, 2, 10, 16)
    assert s is None
    # The rotary channels of k are one vector shared by every head.
    torch.testing.assert_close(k[:, 0, :, 16:], k[:, 1, :, 16:])
    assert m(x).shape == x.shape
    assert not hasattr(m, "k_proj") and not hasattr(m, "v_proj")


def test_mla_is_causal(rng):
    m = MultiHeadLatentAttention(32, 4, 2).double()
    x = torch.randn(2, 12, 32, generator=rng, dtype=torch.float64)
    t = 5
    x2 = x.clone()
    x2[:, t + 1:] = torch.randn(2, 12 - t - 1, 32, generator=rng, dtype=torch.float64)
    torch.testing.assert_close(m(x)[:, :t + 1], m(x2)[:, :t + 1], rtol=0, atol=0)
    assert not torch.allclose(m(x)[:, t + 1:], m(x2)[:, t + 1:])


def test_mla_in_the_model_gradients_and_explorer(rng):
    model = TinyLM(ModelConfig(attn="mla", d_model=32, n_heads=4, n_kv_heads=2, vocab_size=32))
    tokens = torch.randint(0, 32, (2, 20), generator=rng)
    model(tokens).logsumexp(-1).sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), seed_note(rng)
    assert grads["blocks.0.attn.kv_down.weight"].abs().sum() > 0
    maps = model.attention_maps(tokens)
    layer = maps["layers"][0]
    N = 20
    assert layer["mask"].shape == (2, 2, N, N)
    assert torch.equal(layer["mask"][0, 0], torch.ones(N, N, dtype=torch.bool).tril())
    p = layer["probs"]
    torch.testing.assert_close(p.sum(-1), torch.ones(2, 4, N))
    # The explorer's weights are the layer's own: recompute the output from them.
    o = p.double() @ layer["v"].double().repeat_interleave(2, dim=1)
    attn = model.blocks[0].attn
    o_core = attn.core(layer["q"], layer["k"], layer["v"], None)
    torch.testing.assert_close(o.float(), o_core, rtol=1e-4, atol=1e-5)


def seed_note(rng: torch.Generator) -> str:
    return f"generator seed {rng.initial_seed()}"


def test_mla_bad_input():
    with pytest.raises(ValueError, match="rope_dim"):
        MultiHeadLatentAttention(32, 4, rope_dim=3)
    with pytest.raises(ValueError, match="latent_dim"):
        MultiHeadLatentAttention(32, 4, latent_dim=0)
    with pytest.raises(ValueError, match="num_kv_heads"):
        MultiHeadLatentAttention(32, 4, 3)
    m = MultiHeadLatentAttention(32, 4)
    with pytest.raises(ValueError, match=r"\[B, N, C=32\]"):
        m(torch.randn(2, 5, 16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        m([[1.0]])
