"""dma_ref inside Hugging Face's DogeForCausalLM (the optional 'doge' extra) against
transformers' own eager Doge, on a tiny random DogeConfig (no downloads).

Tie-free inputs, on purpose: Doge selects keys with ``torch.topk``, whose order among equal
scores is unspecified, while dma_ref lets the later key win. So A is drawn at random with
|A| >= 0.5 (Doge initialises A = 0: every score 1, all tied; a small |A| squeezes the scores
into a range where fp32 rounds some of them equal), the tokens are distinct (equal tokens give the
first layer equal values, hence tied scores), and in generate() -- where greedy loops repeat
tokens -- the first layer keeps every key (no selection, ties harmless) and the selecting
second layer sees inputs that differ at every position.
"""

from __future__ import annotations

import importlib.util

import pytest
import torch

if importlib.util.find_spec("transformers") is None:
    pytest.skip("needs the 'doge' extra (transformers)", allow_module_level=True)
from dma_ref.integrations.doge import bounded_cache, import_transformers, use_dma

# (transformers through the integration: run from the repository root, a plain import would
# find this repository's kernels/ folder where transformers expects Hugging Face's kernels)
transformers = import_transformers()
DogeConfig, DogeForCausalLM = transformers.DogeConfig, transformers.DogeForCausalLM


def pair(window=5, seed=0):
    cfg = DogeConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, keep_window_size=window,
                     max_position_embeddings=128)
    cfg._attn_implementation = "eager"
    torch.manual_seed(seed)
    ref = DogeForCausalLM(cfg).eval()
    for name, p in ref.named_parameters():
        if name.endswith(".A"):      # |A| >= 0.5: scores spread wide enough for fp32 to keep
            p.data = torch.randn(p.shape).sign() * (0.5 + torch.rand(p.shape))  # them apart
    ours = DogeForCausalLM(cfg).eval()
    ours.load_state_dict(ref.state_dict())
    return ref, use_dma(ours)


def distinct_tokens(rng, B, N):
    return torch.stack([torch.randperm(64, generator=rng)[:N] for _ in range(B)])


@pytest.mark.parametrize("window", [5, 64], ids=["selecting", "w>=N"])
def test_logits_loss_grads_equal_eager_doge(window, rng):
    ref, ours = pair(window)
    x = distinct_tokens(rng, 2, 23)
    a, b = ref(x, labels=x), ours(x, labels=x)
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.loss, a.loss, rtol=1e-5, atol=1e-5)
    a.loss.backward()
    b.loss.backward()
    for (name, p), q in zip(ref.named_parameters(), ours.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-5,
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_greedy_generate_equal_eager_doge(rng):
    ref, ours = pair(5)
    for model in (ref, ours):
        model.model.layers[0].self_attn.keep_window_size = 128     # no selection in layer 0
    prompt = distinct_tokens(rng, 2, 6)
    kw = {"max_new_tokens": 20, "do_sample": False}
    want = ref.generate(prompt, **kw)
    got = ours.generate(prompt, **kw)
    assert torch.equal(got, want), f"{got}\n{want}"
    assert got.shape == (2, 26)


def test_use_dma_refuses_other_models():
    with pytest.raises(ValueError, match="DogeAttention"):
        use_dma(torch.nn.Linear(2, 2))


def test_generate_with_the_bounded_cache(rng):
    """Greedy generate() with dma_ref's bounded cache equals eager Doge with its full cache,
    and each selecting layer holds keep_window_size keys per KV head."""
    ref, ours = pair(5)
    for model in (ref, ours):
        model.model.layers[0].self_attn.keep_window_size = 128
    prompt = distinct_tokens(rng, 2, 9)
    want = ref.generate(prompt, max_new_tokens=20, do_sample=False)
    cache = bounded_cache(ours)
    got = ours.generate(prompt, max_new_tokens=20, do_sample=False, cache=cache)
    assert torch.equal(got, want), f"{got}\n{want}"
    assert cache.layers[1].cache.lengths(0).tolist() == [[5, 5], [5, 5]]
    assert cache.layers[0].cache.lengths(0).tolist() == [[28, 28], [28, 28]]   # 9 + 20 - 1
    assert cache.kv_bytes() > 0
