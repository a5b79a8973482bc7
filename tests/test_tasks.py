"""MQAR and needle-in-a-haystack generators: shapes, determinism, answers, roles."""

from __future__ import annotations

import pytest
import torch

from dma_ref.lab.tasks import (
    IGNORE,
    ROLE_FILLER,
    ROLE_KEY,
    ROLE_QUERY,
    ROLE_VALUE,
    make_batch,
    mqar,
    needle_in_haystack,
    vocab_ranges,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("B,N,P,V,start", [(3, 32, 4, 64, None), (5, 96, 8, 64, 48), (2, 32, 10, 256, 20)])
def test_mqar_shapes_dtypes(B, N, P, V, start):
    b = mqar(B, N, P, V, generator=gen(1), query_start=start)
    assert b.inputs.shape == b.targets.shape == b.roles.shape == (B, N)
    assert b.inputs.dtype == b.targets.dtype == torch.int64 and b.roles.dtype == torch.int8
    assert int(b.inputs.min()) >= 0 and int(b.inputs.max()) < V


def test_mqar_deterministic_by_seed():
    a = mqar(4, 64, 8, 64, generator=gen(7), query_start=40)
    b = mqar(4, 64, 8, 64, generator=gen(7), query_start=40)
    c = mqar(4, 64, 8, 64, generator=gen(8), query_start=40)
    for x, y in ((a.inputs, b.inputs), (a.targets, b.targets), (a.roles, b.roles)):
        assert torch.equal(x, y)
    assert not torch.equal(a.inputs, c.inputs)


def test_mqar_every_answer_is_its_pairs_value():
    B, N, P, V, start = 16, 80, 8, 64, 40
    b = mqar(B, N, P, V, generator=gen(int(torch.randint(0, 2**30, ()))), query_start=start)
    voc = vocab_ranges(V)
    for i in range(B):
        x, y, r = b.inputs[i].tolist(), b.targets[i].tolist(), b.roles[i].tolist()
        pairs = {x[2 * m]: x[2 * m + 1] for m in range(P)}
        assert len(pairs) == P, "keys of one sequence must be distinct"
        queries = [p for p in range(N) if r[p] == ROLE_QUERY]
        assert len(queries) == P and min(queries) >= start
        assert sorted(x[p] for p in queries) == sorted(pairs), "each key is asked once"
        for p in range(N):
            if r[p] == ROLE_QUERY:
                assert y[p] == pairs[x[p]]
            else:
                assert y[p] == IGNORE
            if r[p] == ROLE_FILLER:
                assert x[p] in voc["key"] and x[p] not in pairs, "fillers: other key tokens"
        assert all(r[2 * m] == ROLE_KEY and x[2 * m] in voc["key"] for m in range(P))
        assert all(r[2 * m + 1] == ROLE_VALUE and x[2 * m + 1] in voc["value"] for m in range(P))
        assert all(r[p] in (ROLE_QUERY, ROLE_FILLER) for p in range(2 * P, N))


def test_mqar_more_queries_than_pairs_and_errors():
    b = mqar(2, 40, 4, 64, generator=gen(0), num_queries=10)
    assert int((b.roles == ROLE_QUERY).sum()) == 20
    with pytest.raises(ValueError, match="query_start"):
        mqar(2, 40, 4, 64, generator=gen(0), query_start=3)
    with pytest.raises(ValueError, match="num_queries"):
        mqar(2, 20, 4, 64, generator=gen(0), query_start=18, num_queries=3)
    with pytest.raises(ValueError, match="num_pairs"):
        mqar(2, 200, 31, 64, generator=gen(0))       # 31 keys would leave no filler token


def test_mqar_vocabulary_halves_and_token_zero():
    voc = vocab_ranges(256)
    assert voc["key"] == range(1, 128) and voc["value"] == range(128, 256)
    b = mqar(64, 256, 16, 256, generator=gen(5), query_start=128)
    assert int(b.inputs.min()) >= 1, "token 0 is never drawn"


def test_mqar_query_gaps_follow_the_power_law():
    # Zoology's a = 0.01: P(gap = g) ~ (g + 1)^-0.99, so gap 0 is ~(span)^0.99 times likelier
    # than the last gap; uniform (None) gives a mean gap near span / 2.
    B, N, P, start = 400, 256, 4, 128
    span = N - start
    power = mqar(B, N, P, 256, generator=gen(11), query_start=start, gap_power=0.01)
    flat = mqar(B, N, P, 256, generator=gen(11), query_start=start, gap_power=None)
    gaps_pow = (power.roles == ROLE_QUERY).nonzero()[:, 1] - start
    gaps_flat = (flat.roles == ROLE_QUERY).nonzero()[:, 1] - start
    assert gaps_pow.float().mean() < 0.6 * gaps_flat.float().mean(), (gaps_pow.float().mean(),
                                                                       gaps_flat.float().mean())
    assert abs(gaps_flat.float().mean().item() - (span - 1) / 2) < 0.1 * span
    assert int((gaps_pow < 8).sum()) > 3 * int((gaps_flat < 8).sum())


def test_needle_in_haystack():
    B, N, V = 32, 50, 64
    b = needle_in_haystack(B, N, V, generator=gen(3))
    again = make_batch("niah", B, seq_len=N, vocab_size=V, generator=gen(3))
    assert torch.equal(b.inputs, again.inputs)
    for i in range(B):
        x, y, r = b.inputs[i].tolist(), b.targets[i].tolist(), b.roles[i].tolist()
        d = r.index(ROLE_KEY)
        assert r[d + 1] == ROLE_VALUE and r[-1] == ROLE_QUERY
        assert x[-1] == x[d] and y[-1] == x[d + 1]
        assert all(t == IGNORE for t in y[:-1])
        assert r.count(ROLE_FILLER) == N - 3
        assert all(x[p] != x[d] for p in range(N) if r[p] == ROLE_FILLER), "a filler is the key"
