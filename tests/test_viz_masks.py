"""dma_ref.viz.masks: the pure functions against the package, and the mask explorer widget with
every control set through its value (as a user's slider would)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

import dma_ref
from dma_ref.lifetimes import mask_from_lifetimes
from dma_ref.viz import attention as viz_attention
from dma_ref.viz import masks as M


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("N, w", [(1, 1), (5, 1), (9, 3), (6, 6), (4, 10)])
def test_sliding_window_mask(N, w):
    m = M.sliding_window_mask(N, w)
    for p in range(N):
        assert m[p].nonzero().flatten().tolist() == list(range(max(0, p - w + 1), p + 1))


def test_overview_masks_against_package():
    s = torch.randn(20)
    masks = M.overview_masks(s, 5)
    assert list(masks) == ["dense causal", "sliding window", "DMA (row mode)"]
    torch.testing.assert_close(masks["DMA (row mode)"], dma_ref.dma_mask(s[None, None], 5)[0, 0])
    torch.testing.assert_close(masks["dense causal"], torch.ones(20, 20, dtype=torch.bool).tril())
    with pytest.raises(ValueError, match=r"\[N\]"):
        M.overview_masks(s[None], 5)


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("mode, causal", [("row", True), ("row", False), ("global", True), ("global", False)])
def test_explorer_data_against_package(seed, mode, causal):
    d = M.explorer_data(seed=seed, N=24, window=5, A_scale=0.7, head=1, mode=mode, causal=causal)
    s = d["scores"][None, None]
    torch.testing.assert_close(d["mask"], dma_ref.dma_mask(s, 5, causal=causal, mode=mode)[0, 0])
    torch.testing.assert_close(d["row_mask"], dma_ref.dma_mask(s, 5)[0, 0])
    torch.testing.assert_close(d["kept_per_row"], d["mask"].sum(-1))
    torch.testing.assert_close(d["rows_differ"], (d["mask"] != d["row_mask"]).any(-1))
    if mode == "row" and causal:
        torch.testing.assert_close(d["lifetimes"], dma_ref.key_lifetimes(s, 5)[0, 0])
        torch.testing.assert_close(mask_from_lifetimes(d["lifetimes"][None, None])[0, 0], d["mask"])
        assert not d["rows_differ"].any()
    else:
        assert d["lifetimes"] is None


def test_explorer_scores_are_the_layer_scores():
    # Same seed -> same v, Delta: the scores are dma_scores of them, in bf16, for the chosen head.
    d0 = M.explorer_data(seed=3, head=0, A_scale=0.5)
    d1 = M.explorer_data(seed=3, head=1, A_scale=0.5)
    g = torch.Generator().manual_seed(3)
    v = torch.randn(1, 2, 32, 8, generator=g)
    delta = torch.randn(16, 2, generator=g) * 16 ** -0.5
    s = dma_ref.dma_scores(v.bfloat16(), delta.bfloat16(), torch.full((2,), 0.5, dtype=torch.bfloat16))
    torch.testing.assert_close(d0["scores"], s[0, 0].float())
    torch.testing.assert_close(d1["scores"], s[0, 1].float())
    assert not torch.equal(d0["mask"], d1["mask"])


def test_explorer_A_zero_is_a_sliding_window_and_small_A_ties():
    d = M.explorer_data(A_scale=0.0, N=20, window=4)
    assert d["n_distinct_scores"] == 1
    torch.testing.assert_close(d["mask"], M.sliding_window_mask(20, 4))
    small, large = M.explorer_data(A_scale=0.01), M.explorer_data(A_scale=1.0)
    assert 1 < small["n_distinct_scores"] < large["n_distinct_scores"]


def test_explorer_bad_head():
    with pytest.raises(ValueError, match="head"):
        M.explorer_data(head=2, Hkv=2)


def test_plots_draw_what_they_are_given():
    d = M.explorer_data(mode="global")
    fig = M.plot_explorer(d)
    ax_s, ax_m, ax_r, ax_k = fig.axes
    assert len(ax_s.patches) == d["N"]                                  # one score bar per key
    ref_image = ax_r.get_images()[0].get_array()
    torch.testing.assert_close(torch.as_tensor(ref_image.data).double(), d["ref_mask"].double())
    assert [line.get_ydata()[0] for line in ax_s.get_lines()] == [d["threshold"]]   # tau_p
    assert [round(p.get_height(), 4) for p in ax_s.patches] == [round(x, 4) for x in d["scores"].tolist()]
    assert [p.get_width() for p in ax_k.patches] == d["kept_per_row"].tolist()
    image = ax_m.get_images()[0].get_array()
    torch.testing.assert_close(torch.as_tensor(image.data).double(), d["mask"].double())
    s = torch.randn(12)
    fig = M.plot_overview(s, 3)
    assert len(fig.axes) == 6
    m, e = dma_ref.dma_mask(s[None, None], 3)[0, 0], dma_ref.key_lifetimes(s[None, None], 3)[0, 0]
    fig = M.plot_lifetimes(m, e, s)
    segments = [ln for ln in fig.axes[1].get_lines() if len(ln.get_xdata()) == 2]
    assert len(segments) == int((e > torch.arange(12)).sum())         # one bar per admitted key
    fig = viz_attention.plot_causal_alignment(3, 7)
    images = [torch.as_tensor(ax.get_images()[0].get_array().data).double() for ax in fig.axes]
    torch.testing.assert_close(images[1], dma_ref.dense.causal_mask(3, 7).double())
    torch.testing.assert_close(images[0], viz_attention.top_left_causal_mask(3, 7).double())


# ---------------------------------------------------------------------------------------------
# The widget: set every control, check the state follows
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def explorer():
    widget, state = M.mask_explorer_widget(seed=0, N=32, window=6, A_scale=1.0, show=False)
    return widget, state


def test_widget_initial_state(explorer):
    _widget, state = explorer
    assert set(state["controls"]) == {"seed", "N", "window", "A_scale", "head", "mode", "causal",
                                      "row", "compare", "scores"}
    assert state["updates"] == 1
    ref = M.explorer_data(seed=0, N=32, window=6, A_scale=1.0)
    torch.testing.assert_close(state["data"]["mask"], ref["mask"])
    assert state["fig"] is not None


def test_widget_window(explorer):
    _, state = explorer
    for w in (1, 9, 40):
        state["controls"]["window"].value = w
        d = state["data"]
        assert d["window"] == w
        assert int(d["kept_per_row"].max()) == min(w, d["N"])
        torch.testing.assert_close(d["kept_per_row"], torch.clamp(torch.arange(32) + 1, max=w))


def test_widget_A_scale(explorer):
    _, state = explorer
    state["controls"]["A_scale"].value = 0.0
    assert state["data"]["n_distinct_scores"] == 1
    torch.testing.assert_close(state["data"]["mask"], M.sliding_window_mask(32, 6))
    state["controls"]["A_scale"].value = -1.0                   # negative A flips the ranking
    neg = state["data"]
    assert neg["A_scale"] == -1.0
    pos = M.explorer_data(A_scale=1.0)
    assert not torch.equal(neg["mask"], pos["mask"])


def test_widget_head(explorer):
    _, state = explorer
    before = state["data"]["scores"].clone()
    state["controls"]["head"].value = 1
    assert state["data"]["head"] == 1
    assert not torch.equal(state["data"]["scores"], before)
    torch.testing.assert_close(state["data"]["mask"], M.explorer_data(head=1)["mask"])


def test_widget_mode(explorer):
    _, state = explorer
    assert not state["data"]["rows_differ"].any()
    state["controls"]["mode"].value = "global"
    d = state["data"]
    assert d["mode"] == "global" and d["lifetimes"] is None
    assert d["rows_differ"].any()                                # some rows differ from row mode
    assert (d["kept_per_row"] <= 6).all() and int(d["mask"].sum()) < int(d["row_mask"].sum())
    torch.testing.assert_close(d["mask"], dma_ref.dma_mask(d["scores"][None, None], 6, mode="global")[0, 0])


def test_widget_causal(explorer):
    _, state = explorer
    state["controls"]["causal"].value = False
    d = state["data"]
    assert d["causal"] is False
    assert (d["kept_per_row"] == 6).all()                        # every row keeps w keys of all K
    assert d["mask"].triu(1).any()                               # some kept keys are in the future


def test_widget_seed_and_N(explorer):
    _, state = explorer
    state["controls"]["seed"].value = 5
    torch.testing.assert_close(state["data"]["scores"], M.explorer_data(seed=5)["scores"])
    state["controls"]["N"].value = 10
    assert state["data"]["mask"].shape == (10, 10)
    n_updates = state["updates"]
    state["controls"]["N"].value = 10                            # no change, no recompute
    assert state["updates"] == n_updates


def test_widget_show_draws_into_output():
    widget, state = M.mask_explorer_widget(show=True)
    state["controls"]["window"].value = 3
    assert state["updates"] == 2 and state["data"]["window"] == 3
    assert widget.children[-1] is state["output"]


def test_widget_typed_scores_show_the_tie_rule(explorer):
    """Four equal scores, w = 2: the last row keeps the two *latest* keys, and its threshold is
    key 2 (key 1 has the same score but an earlier position, so it is out)."""
    _, state = explorer
    state["controls"]["window"].value = 2
    state["controls"]["scores"].value = "1, 1, 1, 1"
    d = state["data"]
    assert d["custom_scores"] and d["N"] == 4 and state["error"] is None
    assert d["mask"][3].nonzero().flatten().tolist() == [2, 3]
    assert (d["row"], d["threshold_key"], d["threshold"]) == (3, 2, 1.0)
    state["controls"]["scores"].value = "5, 1, 1, 2, 0"
    d = state["data"]
    torch.testing.assert_close(d["mask"], dma_ref.dma_mask(torch.tensor([[[5., 1, 1, 2, 0]]]), 2)[0, 0])
    assert d["mask"][4].nonzero().flatten().tolist() == [0, 3] and d["threshold_key"] == 3
    state["controls"]["scores"].value = ""                        # back to random scores
    assert not state["data"]["custom_scores"] and state["data"]["N"] == 32


def test_widget_unreadable_scores_are_reported(explorer):
    _, state = explorer
    state["controls"]["scores"].value = "1, two, 3"
    assert "numbers" in state["error"] and not state["data"]["custom_scores"]
    assert state["fig"].texts and "numbers" in state["fig"].texts[0].get_text()


@pytest.mark.parametrize("w", [1, 4, 9])
def test_widget_row_threshold_is_the_wth_best_of_the_prefix(explorer, w):
    _, state = explorer
    state["controls"]["window"].value = w
    for p in (0, 3, 17, 31):
        state["controls"]["row"].value = p
        d = state["data"]
        s = d["scores"]
        prefix = sorted(range(p + 1), key=lambda j: (float(s[j]), j), reverse=True)
        kept = prefix[:min(w, p + 1)]
        assert sorted(kept) == d["mask"][p].nonzero().flatten().tolist()
        assert d["row"] == p and d["threshold_key"] == kept[-1] and d["threshold"] == float(s[kept[-1]])


def test_widget_sliding_window_beside_dma(explorer):
    _, state = explorer
    state["controls"]["compare"].value = "swa"
    d = state["data"]
    assert d["ref_name"] == "sliding window"
    torch.testing.assert_close(d["ref_mask"], M.sliding_window_mask(32, 6))
    torch.testing.assert_close(d["rows_differ"], (d["mask"] != d["ref_mask"]).any(-1))
    assert d["rows_differ"].any() and not d["rows_differ"][:6].any()   # the first w rows keep all
    state["controls"]["A_scale"].value = 0.0                            # all ties: DMA = SWA
    assert not state["data"]["rows_differ"].any()
