"""key_lifetimes: the O(K) lifetime form of the causal row-mode mask (DESIGN.md section 3.5)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dma_ref import dma_mask, key_lifetimes
from dma_ref.lifetimes import mask_from_lifetimes

TIE_VALUES = [-math.inf, -1.0, 0.0, 0.5, 2.0]


def scores(B, H, K, kind):
    if kind == "ties":
        return torch.tensor(TIE_VALUES)[torch.randint(len(TIE_VALUES), (B, H, K))]
    if kind == "bf16":
        return (1 + 0.05 * torch.randn(B, H, K)).to(torch.bfloat16)
    return torch.randn(B, H, K)


@pytest.mark.parametrize("kind", ["distinct", "ties", "bf16"])
@pytest.mark.parametrize("K,w", [(1, 1), (6, 1), (12, 3), (20, 7), (9, 9), (5, 50)])
def test_equals_lifetimes_of_the_brute_force_mask(ref, kind, K, w):
    s = scores(2, 3, K, kind)
    e = key_lifetimes(s, w)
    assert e.dtype == torch.int64 and e.shape == (2, 3, K)
    assert torch.equal(e, ref.lifetimes(ref.mask(s, w)))


@pytest.mark.parametrize("kind", ["distinct", "ties", "bf16"])
@pytest.mark.parametrize("K,w", [(1, 1), (17, 1), (33, 4), (40, 16), (25, 25), (10, 64)])
def test_reproduces_dma_mask(kind, K, w):
    s = scores(2, 2, K, kind)
    e = key_lifetimes(s, w)
    assert torch.equal(mask_from_lifetimes(e), dma_mask(s, w))
    for Q in (1, max(1, K // 3), K):
        assert torch.equal(mask_from_lifetimes(e, q_len=Q), dma_mask(s, w, q_len=Q))


def test_lifetimes_of_a_worked_example():
    # w = 2. Keys by score: 0:1, 1:3, 2:2, 3:0, 4:5. Key 0 is evicted at p = 2 (keys 1, 2 are
    # better), key 3 is never admitted (e = j), key 2 is evicted by key 4 at p = 4.
    s = torch.tensor([[[1.0, 3.0, 2.0, 0.0, 5.0]]])
    assert key_lifetimes(s, 2)[0, 0].tolist() == [2, 5, 4, 3, 5]


@settings(max_examples=150, deadline=None)
@given(values=st.lists(st.one_of(st.sampled_from(TIE_VALUES), st.floats(-4, 4, width=16)),
                       min_size=1, max_size=30),
       w=st.integers(1, 35))
def test_property_range_and_mask(values, w):
    s = torch.tensor(values).view(1, 1, -1)
    K = len(values)
    e = key_lifetimes(s, w)[0, 0]
    j = torch.arange(K)
    assert ((e >= j) & (e <= K)).all()
    assert torch.equal(mask_from_lifetimes(e.view(1, 1, K)), dma_mask(s, w))
    if w >= K:
        assert e.eq(K).all()                            # no selection: nothing is ever evicted


LARGE_K_SCRIPT = textwrap.dedent("""
    import json, resource, time
    # Cap the address space: an implementation that builds a K x K tensor (40 GB of bools at
    # K = 200_000, 5 GB even as bits) fails fast here instead of exhausting the machine.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    import torch
    from dma_ref import key_lifetimes
    K, w = 200_000, 64
    s = torch.randn(1, 1, K)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    e = key_lifetimes(s, w)[0, 0]
    seconds = time.perf_counter() - t
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    # Row counts without a K x K mask: key j adds 1 to every row p in [j, e_j).
    diff = torch.zeros(K + 1, dtype=torch.int64)
    diff.index_add_(0, torch.arange(K), torch.ones(K, dtype=torch.int64))
    diff.index_add_(0, e, -torch.ones(K, dtype=torch.int64))
    counts = diff.cumsum(0)[:K]
    ok_counts = torch.equal(counts, torch.clamp(torch.arange(K) + 1, max=w))
    ok_range = bool(((e >= torch.arange(K)) & (e <= K)).all())
    print(json.dumps(dict(seconds=seconds, grown_mb=grown_mb, counts=ok_counts, range=ok_range)))
""")


def test_no_K_by_K_memory_at_K_200k():
    proc = subprocess.run([sys.executable, "-c", LARGE_K_SCRIPT], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["counts"] and result["range"], result
    # O(K) work: ~0.1 s here. An O(K^2) pass over 4e10 pairs takes minutes even vectorised.
    assert result["seconds"] < 20, result
    # O(K) memory: a few MB per array. Peak resident memory may not grow by 1 GB.
    assert result["grown_mb"] < 1024, result
