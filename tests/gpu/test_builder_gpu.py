"""The compiled mask builder (kernels/ranks.py, kernels/plan.py) on a GPU at long lengths.

The CPU suite checks the same kernels under the Triton interpreter up to K = 1024; here the
compiled kernels must equal the heap reference ``dma_ref.key_lifetimes`` exactly at K up to
65536, and every block list must be exactly ``{j < p0 : e_j > p0}``. Skipped without CUDA.
"""

from __future__ import annotations

import pytest
import torch

from dma_ref import key_lifetimes

pytestmark = pytest.mark.gpu


def make_scores(kind: str, H: int, K: int) -> torch.Tensor:
    if kind == "increasing":
        return torch.arange(K, dtype=torch.float32, device="cuda").expand(1, H, K).contiguous()
    s = torch.randn(1, H, K, device="cuda")
    return (s * 2).round() if kind == "tied" else s


@pytest.mark.parametrize("K,w", [(4096, 1024), (20000, 64), (65536, 1024), (65536, 4096),
                                 (131072, 256)])
@pytest.mark.parametrize("kind", ["random", "tied", "increasing"])
def test_lifetimes_equal_the_heap_reference(K, w, kind):
    from dma_ref.kernels import build_lifetimes

    s = make_scores(kind, 2, K)
    torch.testing.assert_close(build_lifetimes(s, w).cpu(), key_lifetimes(s.cpu(), w),
                               rtol=0, atol=0)


@pytest.mark.parametrize("Q,K,w,block_q", [(8192, 8192, 1024, 64), (3000, 10000, 256, 128),
                                           (16384, 16384, 1024, 32)])
@pytest.mark.parametrize("mode", ["row", "global"])
def test_block_lists_are_exact(Q, K, w, block_q, mode):
    from dma_ref.kernels import block_key_lists, build_lifetimes, global_lifetimes, rank_keys
    from dma_ref.kernels.ranks import thresholds_unchecked

    s = make_scores("random", 2, K)
    ranks = rank_keys(s)
    theta = thresholds_unchecked(ranks, w) if mode == "row" else None
    e = (build_lifetimes(s, w) if mode == "row" else global_lifetimes(s, w)).reshape(2, K)
    idx, start, count = block_key_lists(ranks, theta, Q, block_q, w)
    n_qb = -(-Q // block_q)
    p0 = (K - Q) + torch.arange(n_qb, device="cuda") * block_q                 # [nQB]
    j = torch.arange(K, device="cuda")
    for h in range(2):
        want = (j[None, :] < p0[:, None]) & (e[h][None, :] > p0[:, None])     # [nQB, K]
        assert torch.equal(count[h].long(), want.sum(1)), "list sizes"
        got = torch.zeros(n_qb, K, dtype=torch.int32, device="cuda")
        slots = start[h, :, None].long() + torch.arange(w, device="cuda")[None, :]
        used = torch.arange(w, device="cuda")[None, :] < count[h, :, None]
        rows = torch.arange(n_qb, device="cuda")[:, None].expand(n_qb, w)
        got.index_put_((rows[used], idx[slots[used]].long()),
                       torch.ones_like(rows[used], dtype=torch.int32), accumulate=True)
        assert torch.equal(got, want.to(torch.int32)), "list contents (each key once)"
