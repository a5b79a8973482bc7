"""A training run whose scores overflow stops at that step with a clear error and the last good
weights (issue: the paper's exp form turned MQAR training into NaN)."""

from __future__ import annotations

import math

import pytest
import torch

from dma_ref.lab.train import TrainConfig, train
from dma_ref.lab.train import loop as train_loop
from dma_ref.lab.train.__main__ import main
from dma_ref.lab.train.guard import TrainingDiverged
from dma_ref.nn import TinyLM, load_checkpoint
from dma_ref.scores import EXP_OVERFLOW, score_exponent

TINY = {"seq_len": 16, "pairs": 2, "query_start": None, "vocab_size": 16, "d_model": 32,
        "n_heads": 2, "window": 4, "batch_size": 8, "eval_size": 16, "eval_every": 5,
        "warmup": 1, "window_hold": 0, "window_anneal": 0, "steps": 30}
BAD_LAYER = 1


class OverflowingLM(TinyLM):
    """TinyLM whose last DMA layer has A so large that exp(A * softplus(x)) overflows float32 as
    soon as A (trained at 1000x the lr) grows a little: the failure of the paper's exp form."""

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        with torch.no_grad():
            self.blocks[BAD_LAYER].attn.A.fill_(40.0)


@pytest.fixture
def overflowing(monkeypatch):
    monkeypatch.setattr(train_loop, "TinyLM", OverflowingLM)
    return TrainConfig(**TINY, form="exp", dma_lr_mult=1000.0)


def test_overflow_stops_at_its_step_naming_layer_and_exponent(overflowing):
    with pytest.raises(TrainingDiverged) as info:
        train(overflowing, progress=False, time_every=0)
    err = info.value
    message = str(err)
    assert f"step {err.step}" in message and err.step < TINY["steps"]
    assert f"layer {BAD_LAYER}" in message and "overflow" in message and "form='log'" in message
    exponent = float(message.split("up to ")[1].split(" ")[0])
    assert exponent > EXP_OVERFLOW
    # The last good weights are finite, and their own forward is finite too: the run stopped
    # before the failing update reached the parameters.
    assert all(torch.isfinite(t).all() for t in err.last_good.values())
    model = TinyLM(overflowing.model_config())
    model.load_state_dict(err.last_good)
    x = torch.randint(0, TINY["vocab_size"], (2, TINY["seq_len"]))
    assert torch.isfinite(model(x)).all()


def test_the_same_run_in_log_form_does_not_diverge(monkeypatch):
    monkeypatch.setattr(train_loop, "TinyLM", OverflowingLM)
    res = train(TrainConfig(**TINY, form="log", dma_lr_mult=1000.0), progress=False, time_every=0)
    assert math.isfinite(res["loss"])


def test_cli_saves_the_last_good_checkpoint(overflowing, tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={'-1' if v is None else v}" for k, v in TINY.items()]
    with pytest.raises(TrainingDiverged):
        main([*args, "--attn=dma", "--form=exp", "--dma-lr-mult=1000", f"--out={tmp_path}"])
    assert "last good step" in capsys.readouterr().err
    model, ckpt = load_checkpoint(tmp_path / "last_good.pt")
    assert ckpt["diverged_at_step"] >= 0 and ckpt["causes"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_score_exponent_is_the_log_of_the_exp_form(rng):
    v = torch.randn(2, 2, 7, 4, generator=rng)
    delta, A = torch.randn(8, 2, generator=rng), torch.randn(2, generator=rng)
    from dma_ref import dma_scores
    torch.testing.assert_close(score_exponent(v, delta, A).exp(), dma_scores(v, delta, A))
