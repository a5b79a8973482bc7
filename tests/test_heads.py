"""dma_ref.lab.heads: the statistics notebook 10 asserts, against brute force."""

from __future__ import annotations

import pytest
import torch

from dma_ref.lab.heads import accuracy_at_window, answers, auc, kept_share, score_auc
from dma_ref.lab.tasks import IGNORE, ROLE_FILLER, ROLE_QUERY, ROLE_VALUE, mqar
from dma_ref.nn import ModelConfig, TinyLM


def brute_auc(pos, neg) -> float:
    wins = sum((a > b) + 0.5 * (a == b) for a in pos.tolist() for b in neg.tolist())
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("ties", [False, True])
def test_auc_against_all_pairs(rng, ties):
    pos, neg = torch.randn(40, generator=rng) + 0.5, torch.randn(33, generator=rng)
    if ties:
        pos, neg = pos.round(), neg.round()
    assert auc(pos, neg) == pytest.approx(brute_auc(pos, neg), abs=1e-12)
    assert auc(torch.ones(3), torch.zeros(2)) == 1.0 and auc(torch.zeros(3), torch.ones(2)) == 0.0
    assert auc(torch.ones(3), torch.ones(5)) == 0.5
    with pytest.raises(ValueError, match="at least one"):
        auc(torch.ones(0), torch.ones(2))


def small_model_and_batch(seed: int):
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=32, d_model=32, n_heads=2, window=4, conv_kernel=4, mlp=False,
                      form="log")
    batch = mqar(3, 24, 3, 32, generator=torch.Generator().manual_seed(seed), query_start=14)
    return TinyLM(cfg), batch


def test_score_auc_and_kept_share_against_loops(rng):
    seed = int(torch.randint(0, 2**30, (), generator=rng))
    model, batch = small_model_and_batch(seed)
    maps = model.attention_maps(batch.inputs)
    got_auc = score_auc(maps, batch.roles)
    got_kept = kept_share(maps, batch.roles, "dma", 4)
    assert got_auc.shape == got_kept.shape == (2, 2)
    B, N = batch.inputs.shape
    for li, h in ((0, 0), (0, 1), (1, 0), (1, 1)):
        layer = maps["layers"][li]
        s = layer["s"][:, h]
        pos = s[batch.roles <= ROLE_VALUE]
        neg = s[batch.roles == ROLE_FILLER]
        assert got_auc[li, h].item() == pytest.approx(brute_auc(pos, neg), abs=1e-9), seed
        hit = total = 0
        for b in range(B):
            for p in range(N):
                if batch.roles[b, p] != ROLE_QUERY:
                    continue
                for j in range(p + 1):
                    if batch.roles[b, j] <= ROLE_VALUE:
                        total += 1
                        hit += bool(layer["mask"][b, h, p, j])
        assert got_kept[li, h].item() == pytest.approx(hit / total), seed
    # a sliding window whose reach ends before the pairs keeps none of them
    assert kept_share(maps, batch.roles, "swa", 4).eq(0).all()
    assert kept_share(maps, batch.roles, "mha", 4).eq(1).all()


def test_accuracy_at_window_restores_the_window_and_answers():
    model, batch = small_model_and_batch(3)
    a = accuracy_at_window(model, batch, 24)
    assert 0 <= a <= 1 and all(b.attn.window == 4 for b in model.blocks)
    rows = answers(model, batch.inputs[0], batch.targets[0])
    queries = (batch.targets[0] != IGNORE).nonzero().flatten().tolist()
    assert [r["position"] for r in rows] == queries
    logits = model(batch.inputs[:1])[0]
    for r in rows:
        assert r["prediction"] == int(logits[r["position"]].argmax())
        assert r["target"] == int(batch.targets[0, r["position"]]) and r["right"] == (r["prediction"] == r["target"])
