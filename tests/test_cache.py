"""The decoding caches: DMACache equals full recomputation (naive path and the Triton kernel
under the interpreter, ties included, Q = 1, chunked prefill, batches of different lengths,
w >= context), never holds more than w keys, and generate() gives the same tokens with and
without a cache for every attention kind."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import dma_ref
from dma_ref import key_lifetimes, naive_dma_attention
from dma_ref.nn import ModelConfig, TinyLM
from dma_ref.nn.cache import DMACache, WindowCache
from dma_ref.nn.generate import forward_cached, new_cache


def chunks_of(N: int, sizes: list[int]) -> list[tuple[int, int]]:
    """``[(start, stop)]`` covering 0..N, cycling through ``sizes``."""
    out, start, i = [], 0, 0
    while start < N:
        stop = min(N, start + sizes[i % len(sizes)])
        out.append((start, stop))
        start, i = stop, i + 1
    return out


def cached_attention(q, k, v, s, w, sizes, core, lengths=None):
    """Run q, k, v, s ``[B, H, N, ...]`` chunk by chunk through one DMACache layer; sequences
    shorter than N (``lengths``) are left-padded. Returns o ``[B, Hq, N, D]`` and the cache."""
    B, _, N, _ = q.shape
    lengths = torch.full((B,), N) if lengths is None else lengths
    valid = torch.arange(N)[None, :] >= (N - lengths)[:, None]           # left padding
    cache = DMACache(1, w)
    outs = []
    for a, b in chunks_of(N, sizes):
        pos = cache.next_positions(valid[:, a:b])
        outs.append(cache.attend(0, q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], s[:, :, a:b],
                                 pos, core))
        assert cache.lengths(0).max() <= w, "the cache holds more than w keys"
    return torch.cat(outs, dim=2), cache


def random_qkvs(rng, B, Hq, Hkv, N, D, ties, dtype=torch.float64):
    q = torch.randn(B, Hq, N, D, generator=rng, dtype=dtype)
    k = torch.randn(B, Hkv, N, D, generator=rng, dtype=dtype)
    v = torch.randn(B, Hkv, N, D, generator=rng, dtype=dtype)
    s = torch.randn(B, Hkv, N, generator=rng, dtype=dtype)
    if ties:                                   # three score levels: ties everywhere
        s = torch.randint(0, 3, (B, Hkv, N), generator=rng).to(dtype)
    return q, k, v, s


CASES = [  # (B, Hq, Hkv, N, D, w, chunk sizes)
    (2, 4, 2, 29, 8, 5, [1]),                 # Q = 1 decode from the first token
    (1, 2, 1, 33, 8, 7, [10, 1]),             # a prefill chunk, then decoding
    (2, 2, 2, 40, 8, 4, [3, 7, 1, 13]),       # uneven chunks, GQA off
    (1, 6, 2, 23, 16, 3, [23]),               # one chunk = no cache at all
    (2, 4, 1, 19, 8, 40, [4, 1]),             # w >= context: plain causal attention
]


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize("case", CASES, ids=[f"N{c[3]}w{c[5]}c{c[6]}" for c in CASES])
def test_dma_cache_equals_full_naive(case, ties, rng, ref):
    B, Hq, Hkv, N, D, w, sizes = case
    q, k, v, s = random_qkvs(rng, B, Hq, Hkv, N, D, ties)
    core = partial(naive_dma_attention, window=w)
    got, cache = cached_attention(q, k, v, s, w, sizes, core)
    want = naive_dma_attention(q, k, v, s, w)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    o_ref, _ = ref.attention(q, k, v, s, ref.mask(s, w))        # the float64 loops
    torch.testing.assert_close(got, o_ref, rtol=1e-12, atol=1e-12)
    # What is left: exactly the keys whose lifetime reaches the end, in position order.
    alive = key_lifetimes(s, w) == N
    for b in range(B):
        for h in range(Hkv):
            pos = cache.layers[0].pos[b, h]
            assert pos[pos >= 0].tolist() == alive[b, h].nonzero()[:, 0].tolist()


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
def test_dma_cache_equals_full_triton(ties, rng):
    from dma_ref.kernels import dma_attention  # interpreter on the CPU (conftest)
    B, Hq, Hkv, N, D, w = 2, 4, 2, 21, 16, 4
    q, k, v, s = random_qkvs(rng, B, Hq, Hkv, N, D, ties, dtype=torch.float32)
    core = partial(dma_attention, window=w)
    want = dma_attention(q, k, v, s, w)
    torch.testing.assert_close(want, naive_dma_attention(q, k, v, s, w), rtol=1e-5, atol=1e-5)
    for sizes in ([1], [6, 1, 2]):
        got, _ = cached_attention(q, k, v, s, w, sizes, core)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("sizes", [[1], [5, 2], [30]], ids=["Q1", "chunks", "one"])
def test_dma_cache_batched_different_lengths(sizes, rng):
    """Left-padded sequences of different lengths in one batch: each sequence's outputs equal
    its own full computation (padding is never selected and gets weight 0)."""
    B, Hq, Hkv, N, D, w = 3, 4, 2, 30, 8, 6
    lengths = torch.tensor([30, 17, 4])
    q, k, v, s = random_qkvs(rng, B, Hq, Hkv, N, D, ties=True)
    core = partial(naive_dma_attention, window=w)
    got, cache = cached_attention(q, k, v, s, w, sizes, core, lengths)
    for b, n in enumerate(lengths.tolist()):
        one = [x[b:b + 1, :, N - n:] for x in (q, k, v, s)]
        torch.testing.assert_close(got[b:b + 1, :, N - n:], naive_dma_attention(*one, w),
                                   rtol=1e-12, atol=1e-12)
        assert cache.lengths(0)[b].tolist() == [min(w, n)] * Hkv
    assert int(cache.seen[2]) == 4


def test_kv_bytes_bounded_vs_full(rng):
    B, Hkv, D, w, N = 1, 2, 8, 4, 50
    dma, full = DMACache(1, w), WindowCache(1, None)
    for t in range(N):
        k = torch.randn(B, Hkv, 1, D, generator=rng)
        s = torch.randn(B, Hkv, 1, generator=rng)
        q = torch.randn(B, Hkv, 1, D, generator=rng)
        pos = dma.next_positions(torch.ones(B, 1, dtype=torch.bool))
        full.next_positions(torch.ones(B, 1, dtype=torch.bool))
        dma.attend(0, q, k, k, s, pos, partial(naive_dma_attention, window=w))
        full.attend(0, q, k, k, None, pos)
    per_key_dma = Hkv * (2 * D * 4 + 4 + 8)          # k, v fp32; s fp32; pos int64
    per_key_full = Hkv * (2 * D * 4 + 8)
    assert dma.kv_bytes() == w * per_key_dma
    assert full.kv_bytes() == N * per_key_full


def tiny_model(attn, *, conv=0, mlp=True, kv_heads=2, window=5, layer0_window=None,
               backend="naive", seed=0, dtype=torch.float64):
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=kv_heads,
                      attn=attn, window=window, conv_kernel=conv, mlp=mlp, backend=backend)
    torch.manual_seed(seed)
    model = TinyLM(cfg).to(dtype)
    for p in model.parameters():                       # larger weights: a chaotic model
        p.data.normal_(0, 0.5)
    if layer0_window is not None:
        model.blocks[0].attn.window = layer0_window
    return model.eval()


MODELS = [  # (attn, conv, mlp, kv_heads)
    ("mha", 0, True, 2), ("swa", 0, True, 1), ("swa", 3, False, 2),
    ("dma", 0, True, 2), ("dma", 3, True, 1), ("dma", 2, False, 4),
]


@pytest.mark.parametrize("attn, conv, mlp, kv_heads", MODELS)
def test_cached_logits_equal_full_forward(attn, conv, mlp, kv_heads, rng):
    """Teacher forcing: the chunked cached forward equals the full forward, position by
    position (distinct tokens, so that no two keys of the first layer have tied scores)."""
    model = tiny_model(attn, conv=conv, mlp=mlp, kv_heads=kv_heads)
    tokens = torch.stack([torch.randperm(64, generator=rng)[:37] for _ in range(2)])
    want = model(tokens)
    for sizes in ([1], [8, 1, 3], [37]):
        cache = new_cache(model)
        got = torch.cat([forward_cached(model, tokens[:, a:b], cache)
                         for a, b in chunks_of(37, sizes)], dim=1)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
        if attn == "dma":
            assert all(int(cache.lengths(i).max()) <= 5 for i in range(2))


def test_cached_forward_left_padded_batch(rng):
    """Prompts of different lengths in one batch (left-padded, valid=False) give each
    sequence's own logits, the short convolution included."""
    model = tiny_model("dma", conv=3)
    lengths = [21, 9]
    tokens = torch.stack([torch.randperm(64, generator=rng)[:21] for _ in range(2)])
    valid = torch.arange(21)[None, :] >= torch.tensor([21 - n for n in lengths])[:, None]
    cache = new_cache(model)
    got = torch.cat([forward_cached(model, tokens[:, a:b], cache, valid[:, a:b])
                     for a, b in chunks_of(21, [5, 1])], dim=1)
    for b, n in enumerate(lengths):
        want = model(tokens[b:b + 1, 21 - n:])
        torch.testing.assert_close(got[b:b + 1, 21 - n:], want, rtol=1e-10, atol=1e-10)


GENERATE = MODELS + [("dma", 0, True, 2, "tied")]


@pytest.mark.parametrize("case", GENERATE, ids=["-".join(map(str, c)) for c in GENERATE])
def test_generate_same_tokens_with_and_without_cache(case, rng):
    """Greedy and sampled generation give identical tokens with and without the cache.

    Exact DMA selection needs the same score *bits* in both runs, but a token's projections
    are rounded differently in a matmul over the whole sequence and over one chunk (gemm vs
    gemv). A first layer that sees only tokens gives equal tokens (greedy loops repeat them)
    tied scores, which such rounding breaks either way. So the first DMA layer here keeps every
    key (w >= context: its scores only bias), and the selecting second layer sees inputs that
    differ at every position; the "tied" case sets the second layer's A = 0 instead: every
    score is exactly 1, the tie rule alone selects (the w most recent keys), in both runs."""
    attn, conv, mlp, kv_heads, *tied = case
    model = tiny_model(attn, conv=conv, mlp=mlp, kv_heads=kv_heads,
                       layer0_window=64 if attn == "dma" else None)
    if tied:
        model.blocks[1].attn.A.data.zero_()
    prompt = torch.randint(0, 64, (2, 7), generator=rng)
    a = model.generate(prompt, 24)
    b = model.generate(prompt, 24, use_cache=False)
    assert torch.equal(a, b), f"{a}\n{b}"
    assert torch.equal(model.generate(prompt, 24, prefill_chunk=3), a)
    seed = int(torch.randint(0, 2**31, (1,), generator=rng))
    c = model.generate(prompt, 16, temperature=1.0, generator=torch.Generator().manual_seed(seed))
    d = model.generate(prompt, 16, temperature=1.0, use_cache=False,
                       generator=torch.Generator().manual_seed(seed))
    assert torch.equal(c, d), f"{c}\n{d}"
    assert a.shape == (2, 31) and torch.equal(a[:, :7], prompt)


def test_generate_triton_backend_matches_naive(rng):
    """The DMA model decoding through the Triton kernel (interpreter, fp32) generates what
    the naive backend generates, and what it generates without a cache."""
    naive = tiny_model("dma", conv=2, layer0_window=64, dtype=torch.float32)
    triton = tiny_model("dma", conv=2, layer0_window=64, dtype=torch.float32, backend="triton")
    triton.load_state_dict(naive.state_dict())
    prompt = torch.randint(0, 64, (1, 6), generator=rng)
    a = triton.generate(prompt, 8)
    assert torch.equal(a, naive.generate(prompt, 8))
    assert torch.equal(a, triton.generate(prompt, 8, use_cache=False))


def test_exports_and_bad_input():
    assert dma_ref.TinyLM is TinyLM and dma_ref.ModelConfig is ModelConfig
    assert dma_ref.DMACache is DMACache
    model = tiny_model("dma")
    with pytest.raises(ValueError, match="prompt"):
        model.generate(torch.zeros(3, dtype=torch.int64), 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(torch.zeros(1, 3, dtype=torch.int64), -1)
    with pytest.raises(ValueError, match="window"):
        DMACache(2, [3])
    model.blocks[0].attn.mode = "global"
    with pytest.raises(ValueError, match="row-mode"):
        model.generate(torch.zeros(1, 3, dtype=torch.int64), 2)
