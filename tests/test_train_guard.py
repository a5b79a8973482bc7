"""A training run whose scores overflow stops at that step with a clear error and the last good
weights (issue: the paper's exp form turned MQAR training into NaN)."""

from __future__ import annotations

import json
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
        "warmup": 1, "window_hold": 0, "window_anneal": 0, "steps": 30, "mix_divisors": ()}
BAD_LAYER = 1


class OverflowingLM(TinyLM):
    """TinyLM whose last DMA layer starts with A so large that exp(A * softplus(x)) overflows
    float32 (A * softplus(x) > 88.7 wherever x > -0.57): the failure of the paper's exp form,
    forced at the first step instead of waiting for training to grow A."""

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        with torch.no_grad():
            self.blocks[BAD_LAYER].attn.A.fill_(200.0)


@pytest.fixture
def overflowing(monkeypatch):
    monkeypatch.setattr(train_loop, "TinyLM", OverflowingLM)
    return TrainConfig(**TINY, form="exp")


def test_overflow_stops_at_its_step_naming_layer_and_exponent(overflowing):
    with pytest.raises(TrainingDiverged) as info:
        train(overflowing, progress=False, time_every=0)
    err = info.value
    message = str(err)
    assert f"step {err.step}" in message
    assert f"layer {BAD_LAYER}" in message and "overflow" in message and "form='log'" in message
    exponent = float(message.split("up to ")[1].split(" ")[0])
    assert exponent > EXP_OVERFLOW
    # The run stopped before the failing update: the weights it keeps are finite and are the
    # ones it started from (train() seeds torch with cfg.seed before building the model).
    assert err.step == 0
    assert all(torch.isfinite(t).all() for t in err.last_good.values())
    torch.manual_seed(overflowing.seed)
    start = OverflowingLM(overflowing.model_config()).state_dict()
    assert start.keys() == err.last_good.keys()
    assert all(torch.equal(start[k], err.last_good[k]) for k in start)


def test_the_same_run_in_log_form_does_not_diverge(monkeypatch):
    monkeypatch.setattr(train_loop, "TinyLM", OverflowingLM)
    res = train(TrainConfig(**TINY, form="log"), progress=False, time_every=0)
    assert math.isfinite(res["loss"])


def test_cli_saves_the_last_good_checkpoint(overflowing, tmp_path, capsys):
    args = [f"--{k.replace('_', '-')}={'-1' if v is None else v}" for k, v in TINY.items()]
    with pytest.raises(TrainingDiverged):
        main([*args, "--attn=dma", "--form=exp", f"--out={tmp_path}"])
    assert "last good step" in capsys.readouterr().err
    model, ckpt = load_checkpoint(tmp_path / "last_good.pt")
    assert ckpt["diverged_at_step"] >= 0 and ckpt["causes"]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_score_exponent_is_the_log_of_the_exp_form(rng):
    v = torch.randn(2, 2, 7, 4, generator=rng)
    delta, A = torch.randn(8, 2, generator=rng), torch.randn(2, generator=rng)
    from dma_ref import dma_scores
    torch.testing.assert_close(score_exponent(v, delta, A).exp(), dma_scores(v, delta, A))


class PoisonedLM(TinyLM):
    """An MHA model with one infinite embedding row: SDPA does not refuse it, the loss is NaN
    (the path a CUDA run takes, where nothing checks the scores' values)."""

    def __init__(self, cfg, device=None):
        super().__init__(cfg, device)
        with torch.no_grad():
            self.embed.weight[:, 0] = math.inf


def test_nan_loss_without_an_exception_is_caught_too(monkeypatch):
    monkeypatch.setattr(train_loop, "TinyLM", PoisonedLM)
    with pytest.raises(TrainingDiverged, match=r"step 0: layer 0 \(blocks.0.attn\): non-finite q"):
        train(TrainConfig(**{**TINY, "attn": "mha"}), progress=False, time_every=0)


def test_forms_comparison_records_the_diverged_run(monkeypatch, tmp_path):
    """``python -m dma_ref.lab.train.forms`` trains both forms and records a diverged exp run
    (its step and causes) beside a finished log run, instead of stopping."""
    from dma_ref.lab.train import forms

    monkeypatch.setattr(train_loop, "TinyLM", OverflowingLM)
    monkeypatch.setattr(forms, "TrainConfig", lambda **kw: TrainConfig(**{**TINY, "steps": 6, **kw}))
    out = tmp_path / "forms.json"
    rec = forms.main(["--seeds", "3", "--out", str(out)])
    assert set(rec["runs"]) == {"exp_s3", "log_s3"}
    exp, log = rec["runs"]["exp_s3"], rec["runs"]["log_s3"]
    assert exp["accuracy"] is None and exp["diverged_at"] == 0 and "overflow" in exp["causes"][0]
    assert log["diverged_at"] is None and 0 <= log["accuracy"] <= 1 and log["curve"]
    assert rec["config"]["steps"] == 6 and "form" not in rec["config"]
    assert json.loads(out.read_text())["runs"]["log_s3"]["seed"] == 3


def test_exp_form_warns_and_log_is_the_default():
    from dma_ref.nn import ModelConfig

    assert ModelConfig().form == "log" and TrainConfig().form == "log"
    with pytest.warns(UserWarning, match=r"form='exp'.*overflows float32"):
        train(TrainConfig(**{**TINY, "steps": 1}, form="exp"), progress=False, time_every=0)
