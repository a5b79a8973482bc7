"""The primer's index-arithmetic pictures: the pure functions behind them and the figures."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest
import torch

from dma_ref.viz import triton as viz_triton


def test_program_owner_covers_every_element_once():
    owner, valid = viz_triton.program_owner(10, 4)
    assert owner.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert valid.sum() == 10 and not valid[10:].any()
    with pytest.raises(ValueError, match="block"):
        viz_triton.program_owner(10, 0)


def test_tile_offsets_address_the_same_elements_as_torch(rng):
    x = torch.randn(7, 9, generator=rng)
    for view in (x, x.T.contiguous().T, x[:, :6]):
        M, N = view.shape
        offsets, ok = viz_triton.tile_offsets(4, 4, 4, 4, *view.stride(), M, N)
        flat = view.as_strided((view.untyped_storage().nbytes() // 4,), (1,), 0)
        got = flat[offsets[ok] + view.storage_offset()]
        assert torch.equal(got, view[4:8, 4:8][ok[:min(4, M - 4), :min(4, N - 4)]])
        assert ok.sum() == min(4, M - 4) * min(4, N - 4)


def test_figures_draw():
    for fig in (viz_triton.plot_program_map(10, 4),
                viz_triton.plot_tile_offsets(6, 7, 4, 4, 4, 4, {"row-major": (7, 1),
                                                                 "transposed": (1, 6)}),
                viz_triton.plot_logit_tiles(5, 11, 4, 4)):
        assert fig.axes
        plt.close(fig)


@pytest.mark.parametrize("spread,offset", [(1.0, 0.0), (30.0, 0.0), (300.0, 0.0), (2.0, 1000.0)])
def test_log2_units_agree_with_float64_within_the_stated_bound(spread, offset, rng):
    """Both fp32 weightings against exp in float64, the stated bound checked with large logits
    too (an offset of 1000 with a spread of 2: the rounding of x log2(e) dominates)."""
    x = torch.randn(257, generator=rng) * spread + offset
    natural, base2, (rel, bound) = viz_triton.log2_unit_error(x)
    exact = torch.exp(x.double() - x.double().max())
    assert natural.dtype == base2.dtype == torch.float32
    assert natural.max() == base2.max() == 1.0
    live = exact > 1e-30                                 # fp32 underflows below that
    assert (rel[live] <= bound[live]).all(), (rel[live] / bound[live]).max()
    for w in (natural, base2):
        err = (w.double() - exact).abs() / exact
        assert (err[live] <= bound[live]).all(), (err[live] / bound[live]).max()
