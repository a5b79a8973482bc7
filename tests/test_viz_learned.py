"""Learned-mask explorer: pure functions, head statistics, every widget control, nb10 checkers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch

from dma_ref import dma_mask, key_lifetimes
from dma_ref.lab.tasks import ROLE_QUERY, ROLE_VALUE, mqar
from dma_ref.lab.train import accuracy
from dma_ref.nn import ModelConfig, TinyLM
from dma_ref.viz import learned


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = TinyLM(ModelConfig(vocab_size=32, d_model=32, n_heads=4, attn="dma", window=6)).eval()
    for block in model.blocks:                  # spread the scores so that heads differ visibly
        block.attn.A.data = torch.tensor([0.5, 1.0, 2.0, 3.0])
    batch = mqar(3, 32, 3, 32, generator=torch.Generator().manual_seed(1), query_start=20)
    return model, batch


def test_layer_view_matches_package(setup):
    model, batch = setup
    maps = model.attention_maps(batch.inputs)
    for w in (3, 6, 40):
        view = learned.layer_view(maps["layers"][1], "dma", 2, w, sample=1)
        s = maps["layers"][1]["s"][1:2, 2:3]
        assert torch.equal(view["mask"], dma_mask(s, w)[0, 0])
        assert torch.equal(view["lifetimes"], key_lifetimes(s, w)[0, 0])
        torch.testing.assert_close(view["probs"].sum(-1), torch.ones(32))
        assert (view["probs"][~view["mask"]] == 0).all()
    # with the trained window the probabilities are the model's own
    view = learned.layer_view(maps["layers"][0], "dma", 3, 6, sample=2)
    torch.testing.assert_close(view["probs"], maps["layers"][0]["probs"][2, 3])


def test_query_view_counts(setup):
    model, batch = setup
    maps = model.attention_maps(batch.inputs)
    view = learned.layer_view(maps["layers"][1], "dma", 0, 6, sample=0)
    roles = batch.roles[0]
    p = int((roles == ROLE_QUERY).nonzero()[0])
    row = learned.query_view(view, roles, p)
    assert sum(row["kept_by_role"].values()) == int(view["mask"][p].sum()) == 6
    assert row["pair_attention"] == pytest.approx(float(view["probs"][p][roles <= ROLE_VALUE].sum()))
    with pytest.raises(ValueError):
        learned.query_view(view, roles, 32)


@pytest.mark.parametrize("attn", ["mha", "swa", "dma"])
def test_head_statistics_kinds(attn):
    torch.manual_seed(0)
    model = TinyLM(ModelConfig(vocab_size=32, d_model=32, n_heads=4, attn=attn, window=4)).eval()
    batch = mqar(2, 32, 3, 32, generator=torch.Generator().manual_seed(2), query_start=16)
    maps = model.attention_maps(batch.inputs)
    stats = learned.head_statistics(maps, batch.roles, attn, 4)
    assert len(stats) == 8 and {(s["layer"], s["head"]) for s in stats} == {(l, h) for l in range(2) for h in range(4)}
    for st in stats:
        assert st["kind"] in learned.KINDS
        for key in ("kept_local", "kept_persistent", "kept_pairs", "attn_pairs"):
            assert 0.0 <= st[key] <= 1.0 + 1e-6
    if attn == "swa":
        assert all(st["kind"] == "local" and st["kept_local"] == 1.0 for st in stats)
    if attn == "mha":
        assert all(st["kind"] == "global" and st["kept_persistent"] == 1.0 for st in stats)
    # statistics recomputed for another window differ from the trained one
    if attn == "dma":
        other = learned.head_statistics(maps, batch.roles, attn, 12)
        assert [s["kept_local"] for s in other] != [s["kept_local"] for s in stats]


def test_widget_every_control_changes_the_result(setup):
    model, batch = setup
    _widget, state = learned.learned_mask_widget(model, batch, show=False)
    c = state["controls"]
    assert set(c) == {"sample", "layer", "head", "query", "window"}
    assert state["updates"] == 1 and state["fig"] is not None

    def snapshot():
        return (state["view"]["scores"].clone(), state["view"]["mask"].clone(),
                state["row"]["attention"].clone(), state["row"]["query"])

    changes = {"layer": 0, "head": 3, "query": 2, "window": 3, "sample": 2}
    for name, value in changes.items():
        before, fig_before, n = snapshot(), state["fig"], state["updates"]
        c[name].value = value
        after = snapshot()
        assert state["updates"] == n + 1 and state["fig"] is not fig_before, name
        assert any(not torch.equal(torch.as_tensor(a), torch.as_tensor(b)) for a, b in zip(before, after)), name
    # the query slider moves from query to query: index 2 is the third query of sample 2
    p = (batch.roles[2] == ROLE_QUERY).nonzero().flatten().tolist()[2]
    assert state["row"]["query"] == p and state["view"]["mask"][p].sum() == 3
    # the window what-if RUNS the model at w = 3: its answer and held-out accuracy
    for block in model.blocks:
        block.attn.window = 3
    logits = model(batch.inputs)
    want_acc = accuracy(model, batch)
    for block in model.blocks:
        block.attn.window = model.cfg.window
    ans = state["answer"]
    assert ans["position"] == p and ans["prediction"] == int(logits[2, p].argmax())
    assert ans["target"] == int(batch.targets[2, p]) and ans["right"] == (ans["prediction"] == ans["target"])
    assert state["accuracy"] == want_acc
    assert f"answers {ans['prediction']}" in state["fig"].axes[0].get_title()
    assert all(b.attn.window == model.cfg.window for b in model.blocks)     # restored
    c["window"].value = model.cfg.window                                     # back: other logits
    assert not torch.equal(model(batch.inputs), logits)


def test_figures(setup):
    model, batch = setup
    maps = model.attention_maps(batch.inputs)
    stats = learned.head_statistics(maps, batch.roles, "dma", 6)
    for fig in (learned.plot_head_statistics(stats), learned.plot_task_sample(batch, 0, window=6),
                learned.plot_comparison({"mha": 1.0, "swa": 0.2, "dma": 0.95},
                                        {"mha": [[1, 0.5], [2, 1.0]], "swa": [[1, 0.1], [2, 0.2]],
                                         "dma": [[1, 0.4], [2, 0.95]]}, {"seq_len": 32})):
        assert len(fig.axes) >= 1
