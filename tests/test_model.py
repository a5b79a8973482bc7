"""The tiny LM: the three attentions differ only in attention, causality, internals, checkpoints."""

from __future__ import annotations

import pytest
import torch

from dma_ref import dense_attention, dma_mask
from dma_ref.lab.tasks import mqar
from dma_ref.mask import sliding_window_mask
from dma_ref.nn import (
    CHECKPOINT,
    DMAAttention,
    ModelConfig,
    TinyLM,
    backend_for,
    load_checkpoint,
    save_checkpoint,
)


def tiny(attn: str, **kw) -> TinyLM:
    return TinyLM(ModelConfig(vocab_size=32, d_model=32, n_layers=2, n_heads=4, attn=attn, window=4, **kw))


def test_same_parameters_apart_from_delta_and_A():
    models = {a: tiny(a) for a in ("mha", "swa", "dma")}
    names = {a: {n for n, _ in m.named_parameters()} for a, m in models.items()}
    assert names["mha"] == names["swa"]
    extra = names["dma"] - names["mha"]
    assert extra and all(n.endswith((".delta", ".A")) for n in extra)
    assert names["mha"] <= names["dma"]
    counts = {a: m.num_params(exclude_dma=True) for a, m in models.items()}
    assert counts["mha"] == counts["swa"] == counts["dma"]
    assert models["dma"].num_params() > counts["dma"]


@pytest.mark.parametrize("attn", ["mha", "swa", "dma"])
def test_causal_shapes_and_dtype(attn):
    model = tiny(attn).eval()
    x = torch.randint(0, 32, (2, 20))
    logits = model(x)
    assert logits.shape == (2, 20, 32) and logits.dtype == torch.float32
    t = 11
    y = x.clone()
    y[:, t:] = torch.randint(0, 32, (2, 20 - t))
    with torch.no_grad():
        torch.testing.assert_close(model(y)[:, :t], logits[:, :t].detach())
        assert not torch.allclose(model(y)[:, t:], logits[:, t:].detach())


def test_dma_with_wide_window_and_zero_bias_is_mha():
    """With w >= N every past key is kept; form="log" with A = 0 makes s = 0: DMA becomes MHA."""
    dma = TinyLM(ModelConfig(vocab_size=32, d_model=32, n_heads=4, attn="dma", window=64, form="log"))
    for block in dma.blocks:
        block.attn.A.data.zero_()
    mha = TinyLM(ModelConfig(vocab_size=32, d_model=32, n_heads=4, attn="mha"))
    mha.load_state_dict({k: v for k, v in dma.state_dict().items() if not k.endswith((".delta", ".A"))})
    x = torch.randint(0, 32, (3, 24))
    with torch.no_grad():
        torch.testing.assert_close(dma(x), mha(x), atol=2e-5, rtol=1e-4)
        dma.blocks[0].attn.window = 5                        # now the selection matters
        assert not torch.allclose(dma(x), mha(x), atol=1e-3)


def test_swa_attention_is_the_band():
    model = tiny("swa")
    attn = model.blocks[0].attn
    x = torch.randn(2, 12, 32)
    q, k, v, _ = attn.project(x)
    want = dense_attention(q, k, v, mask=sliding_window_mask(12, 4)[None, None])
    torch.testing.assert_close(attn.attend(q, k, v), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["mha", "swa", "dma"])
def test_attention_maps(attn):
    model = tiny(attn)
    x = torch.randint(0, 32, (2, 16))
    maps = model.attention_maps(x)
    with torch.no_grad():             # the same SDPA kernel as attention_maps (no_grad picks its own)
        torch.testing.assert_close(maps["logits"], model(x))
    assert len(maps["layers"]) == 2
    for layer in maps["layers"]:
        mask, probs, s, e = layer["mask"], layer["probs"], layer["s"], layer["lifetimes"]
        assert mask.shape == (2, 4, 16, 16) and probs.shape == (2, 4, 16, 16) and e.shape == (2, 4, 16)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 4, 16))
        assert (probs[~mask] == 0).all()
        p = torch.arange(16)[:, None]
        j = torch.arange(16)[None, :]
        keep_from_e = (j <= p) & (p < e[..., None, :])
        assert torch.equal(keep_from_e, mask)
        if attn == "dma":
            assert torch.equal(mask, dma_mask(s, 4))
            assert (mask.sum(-1) == torch.arange(16).clamp(max=3) + 1).all()
        elif attn == "swa":
            assert torch.equal(mask, sliding_window_mask(16, 4).expand_as(mask))


@pytest.mark.parametrize("attn", ["mha", "swa", "dma"])
def test_core_is_a_hookable_parameter_free_child(attn):
    """``attn.core(q, k, v, s) -> o [B, Hq, N, D]`` is the whole attention between the
    projections: a forward hook on it sees every layer once, and it adds no state-dict keys."""
    model = tiny(attn).eval()
    seen = []
    hooks = [b.attn.core.register_forward_hook(lambda m, a, o: seen.append((a, o)))
             for b in model.blocks]
    x = torch.randint(0, 32, (2, 12))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    assert len(seen) == 2
    (q, k, v, s), o = seen[0]
    assert o.shape == q.shape == k.shape == v.shape == (2, 4, 12, 8)
    assert (s is None) == (attn != "dma")
    assert not any(".core" in key for key in model.state_dict())
    assert not list(model.blocks[0].attn.core.parameters())
    with torch.no_grad():
        attn_layer = model.blocks[0].attn
        h = model.blocks[0].norm1(model.embed(x))
        torch.testing.assert_close(attn_layer.output(attn_layer.core(*attn_layer.project(h))),
                                   attn_layer(h))


def test_one_backend_rule():
    assert backend_for("cpu") == "sdpa" and backend_for(None) == "sdpa"
    assert backend_for("cuda") == "triton" and backend_for(torch.device("cuda", 1)) == "triton"
    model = TinyLM(ModelConfig(vocab_size=32, d_model=32, n_heads=4), device="cpu")
    assert all(b.attn.backend == "sdpa" for b in model.blocks)
    assert isinstance(model.blocks[0].attn, DMAAttention)


def test_checkpoint_roundtrip(tmp_path):
    model = tiny("dma", tie_embeddings=False)
    save_checkpoint(model, tmp_path / "m.pt", extra={"note": "x"})
    loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["note"] == "x" and loaded.cfg.tie_embeddings is False
    x = torch.randint(0, 32, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_shipped_checkpoint_solves_mqar():
    assert CHECKPOINT.exists(), "dma_ref/data/mqar_dma.pt is missing"
    assert CHECKPOINT.stat().st_size <= 5 * 2**20
    model, ckpt = load_checkpoint(CHECKPOINT)
    tc = ckpt["train_config"]
    assert model.cfg.attn == "dma"
    seed = int(torch.randint(0, 2**30, ()))
    b = mqar(128, tc["seq_len"], tc["pairs"], tc["vocab_size"], generator=torch.Generator().manual_seed(seed),
             query_start=tc["query_start"], gap_power=tc["gap_power"])
    with torch.no_grad():
        pred = model(b.inputs).argmax(-1)
    scored = b.targets >= 0
    acc = (pred[scored] == b.targets[scored]).float().mean().item()
    assert acc >= 0.97, f"checkpoint accuracy {acc:.3f} on fresh MQAR (seed {seed})"


def test_triton_backend_matches_naive():
    """The model with the Triton kernels (interpreter on a CPU) equals the naive backend,
    forward and backward (fp32, head dim 16)."""
    torch.manual_seed(int(torch.randint(0, 2**30, ())))
    cfg = {"vocab_size": 32, "d_model": 64, "n_heads": 4, "attn": "dma", "window": 6,
           "conv_kernel": 4, "mlp": False}
    naive = TinyLM(ModelConfig(**cfg, backend="naive"))
    triton = TinyLM(ModelConfig(**cfg, backend="triton"))
    triton.load_state_dict(naive.state_dict())
    x = torch.randint(0, 32, (2, 24))
    a, b = naive(x), triton(x)
    torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    g = torch.randn_like(a)
    (a * g).sum().backward()
    (b * g).sum().backward()
    for (name, p1), p2 in zip(naive.named_parameters(), triton.parameters()):
        torch.testing.assert_close(p2.grad, p1.grad, atol=1e-4, rtol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


def test_short_conv_is_causal_and_resumes_from_past(rng):
    """y_t depends on x_{t-c+1..t} only; running a sequence in two pieces with ``past`` (the last
    c - 1 inputs of the first piece) gives the same output as one piece."""
    from dma_ref.nn.model import ShortConv

    conv = ShortConv(8, 4).double()
    x = torch.randn(2, 12, 8, generator=rng, dtype=torch.float64)
    y = conv(x)
    x2 = x.clone()
    x2[:, 7:] += 1.0                                     # change the future of position 6
    torch.testing.assert_close(conv(x2)[:, :7], y[:, :7])
    x3 = x.clone()
    x3[:, 2] += 1.0                                      # position 2 reaches 2..5 only
    changed = (conv(x3) - y).abs().sum((0, 2)) > 0
    assert changed.nonzero().flatten().tolist() == [2, 3, 4, 5]
    torch.testing.assert_close(torch.cat([conv(x[:, :5]), conv(x[:, 5:], past=x[:, 2:5])], 1), y)
    w = conv.conv.weight[:, 0]                           # [C, 4]: tap i multiplies x_{t-3+i}
    t = 9
    want = x[:, t] + sum(w[:, i] * x[:, t - 3 + i] for i in range(4))
    torch.testing.assert_close(y[:, t], want)
    with pytest.raises(ValueError, match=r"past must have shape \[B=2, kernel-1=3, C=8\]"):
        conv(x, past=x[:, :2])
    with pytest.raises(ValueError, match="conv_kernel"):
        ModelConfig(conv_kernel=-1)
    no_mlp = TinyLM(ModelConfig(vocab_size=16, d_model=16, n_heads=2, mlp=False, conv_kernel=3))
    assert all(b.mlp is None and b.conv is not None for b in no_mlp.blocks)
