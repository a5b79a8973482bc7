"""Training loop, comparison outputs, recorded results, and the notebook 09 checkers."""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import asdict

import pytest
import torch

from dma_ref.check import nb09
from dma_ref.lab.tasks import IGNORE
from dma_ref.lab.train import (
    GPU_PRESET,
    TrainConfig,
    accuracy,
    format_comparison,
    lm_loss,
    run_comparison,
    train,
    window_at,
)
from dma_ref.lab.train.__main__ import main, parse_options
from dma_ref.lab.train.compare import results_suffix
from dma_ref.lab.train.config import GPU_MAX_SECONDS
from dma_ref.lab.train.loop import lr_at
from dma_ref.paths import FIGURES

TINY = {"seq_len": 16, "pairs": 2, "query_start": None, "vocab_size": 16, "d_model": 32, "n_heads": 2,
        "window": 4, "batch_size": 16, "eval_size": 32, "eval_every": 5, "warmup": 2, "window_hold": 0,
        "window_anneal": 0, "mix_divisors": (2,)}


def test_lm_loss_ignores_unscored_positions():
    logits = torch.randn(2, 5, 7)
    targets = torch.full((2, 5), IGNORE)
    targets[0, 1], targets[1, 4] = 3, 6
    want = -(torch.log_softmax(logits[0, 1], -1)[3] + torch.log_softmax(logits[1, 4], -1)[6]) / 2
    torch.testing.assert_close(lm_loss(logits, targets), want)


def test_accuracy_counts_only_queries():
    class Oracle(torch.nn.Module):
        """Predicts token 1 everywhere."""
        def forward(self, x):
            return torch.nn.functional.one_hot(torch.ones_like(x), 4).float()
    from dma_ref.lab.tasks import TaskBatch
    x = torch.zeros(2, 6, dtype=torch.int64)
    y = torch.full((2, 6), IGNORE)
    y[0, 2], y[0, 3], y[1, 5] = 1, 2, 1               # two of three right
    acc = accuracy(Oracle(), TaskBatch(x, y, torch.zeros(2, 6, dtype=torch.int8)))
    assert acc == pytest.approx(2 / 3)


def test_lr_schedule():
    cfg = TrainConfig(lr=1e-3, warmup=10, steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-4)
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(99, cfg) == pytest.approx(1e-4, rel=0.05)
    assert all(lr_at(s, cfg) >= lr_at(s + 1, cfg) for s in range(10, 99))


def test_window_curriculum():
    cfg = TrainConfig(seq_len=64, window=16, window_hold=10, window_anneal=8, steps=30)
    ws = [window_at(s, cfg) for s in range(30)]
    assert ws[:10] == [64] * 10 and ws[18:] == [16] * 12
    assert all(a >= b for a, b in itertools.pairwise(ws)) and 16 < ws[14] < 64
    assert window_at(0, TrainConfig(window_hold=0, window_anneal=0, window=5)) == 5


def test_final_model_uses_the_target_window():
    cfg = TrainConfig(attn="dma", steps=6, **{**TINY, "window_hold": 100})   # stops mid-curriculum
    res = train(cfg, progress=False)
    assert all(b.attn.window == cfg.window for b in res["model"].blocks)


@pytest.mark.parametrize("attn", ["mha", "dma"])
def test_training_lowers_the_loss(attn):
    cfg = TrainConfig(attn=attn, steps=40, lr=3e-3, **TINY)
    res = train(cfg, progress=False)
    assert res["loss"] < math.log(cfg.vocab_size) - 0.5, res["loss"]
    assert [s for s, _ in res["curve"]] == list(range(5, 41, 5))
    assert all(0.0 <= a <= 1.0 for _, a in res["curve"])


def test_compare_writes_results(tmp_path):
    res = run_comparison(TrainConfig(steps=3, **TINY), tmp_path, progress=False,
                         checkpoint=tmp_path / "ck" / "dma.pt", time_every=2)
    data = json.loads((tmp_path / "results.json").read_text())
    assert set(data) == {"config", "accuracy"}
    assert set(data["accuracy"]) == {"mha", "swa", "dma"}
    assert data["accuracy"] == res["accuracy"]
    assert data["config"]["seq_len"] == 16 and "attn" not in data["config"]
    assert (tmp_path / "comparison.png").stat().st_size > 1000
    assert (tmp_path / "ck" / "dma.pt").exists()
    curves = json.loads((tmp_path / "curves.json").read_text())
    for metric in ("seconds", "steps_run", "tokens_per_s", "attention_share", "loss_curves"):
        assert set(curves[metric]) == {"mha", "swa", "dma"}, metric
    assert curves["steps_run"]["dma"] == 3 and 0 < curves["attention_share"]["dma"] < 1
    assert "perf_counter" in curves["attention_share_method"] and curves["precision"] == "fp32"
    table = format_comparison(data, curves)
    assert len(table.splitlines()) == 4 and "dma" in table and "%" in table


def test_compare_files_share_the_results_suffix(tmp_path):
    run_comparison(TrainConfig(steps=1, **TINY), tmp_path, progress=False, attns=("mha",),
                   results_name="results_gpu_ddp2.json")
    assert {p.name for p in tmp_path.iterdir()} == {"results_gpu_ddp2.json", "curves_gpu_ddp2.json",
                                                    "comparison_gpu_ddp2.png"}
    assert [results_suffix(n) for n in ("results.json", "results_gpu.json", "x.json")] == ["", "_gpu", "_x"]


def test_format_comparison_of_an_old_record():
    """Records written before the measurements existed show "-" for them."""
    table = format_comparison({"accuracy": {"mha": 1.0, "swa": 0.25}}, {"seconds": {"mha": 12.3}})
    rows = table.splitlines()
    assert rows[1].split() == ["mha", "1.000", "12", "-", "-", "-"]
    assert rows[2].split() == ["swa", "0.250", "-", "-", "-", "-"]


def test_run_measurements():
    cfg = TrainConfig(attn="mha", steps=4, **TINY)
    res = train(cfg, progress=False, time_every=2)
    assert res["steps_run"] == 4 and res["attention_share_steps"] == 2       # steps 1 and 3
    tokens = sum(L.batch * L.seq_len for L in cfg.lengths())
    assert tokens == 2 * cfg.batch_size * cfg.seq_len          # seq_len and seq_len / 2, same tokens
    assert res["tokens_per_s"] == pytest.approx(4 * tokens / res["seconds"])
    assert res["loss_curve"][-1] == [4, res["loss"]] and res["precision"] == "fp32"
    cores = [b.attn.core for b in res["model"].blocks]                       # timer removed
    assert not any(c._forward_pre_hooks or c._forward_hooks for c in cores)
    # Timing never changes the training: no sampled step gives the same model and loss.
    plain = train(cfg, progress=False, time_every=0)
    assert plain["attention_share"] is None and plain["loss"] == res["loss"]
    assert all(torch.equal(a, b) for a, b in zip(plain["model"].state_dict().values(),
                                                 res["model"].state_dict().values()))


class _SlowBackward(torch.autograd.Function):
    """Identity whose backward sleeps: an attention with a known backward time."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        time.sleep(0.1)
        return g


def test_attention_share_counts_forward_and_backward(monkeypatch):
    """An attention core that sleeps 100 ms forward and 100 ms backward, in each of 2 layers,
    against a tiny model whose other work takes some 10-100 ms: most of the step is attention.
    Were only the forward (or only the backward) measured, the share could not exceed 1/2."""
    from dma_ref.nn import TinyLM

    cfg = TrainConfig(attn="mha", steps=3, **TINY)       # step 1 is timed (not the first step)
    core = type(TinyLM(cfg.model_config()).blocks[0].attn.core)
    forward = core.forward

    def slow(self, *args, **kwargs):
        time.sleep(0.1)
        return _SlowBackward.apply(forward(self, *args, **kwargs))

    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # on a busy CPU, two spinning threads can stall the tiny ops
    try:
        fast = train(cfg, progress=False, time_every=2)["attention_share"]
        monkeypatch.setattr(core, "forward", slow)
        share = train(cfg, progress=False, time_every=2)["attention_share"]
    finally:
        torch.set_num_threads(threads)
    assert 0.55 < share < 1.0 and fast < 0.5, (share, fast)


def test_cli_single_run(tmp_path, capsys):
    main(["--attn", "swa", "--steps", "2", "--seq-len", "16", "--pairs", "2", "--query-start", "-1",
          "--vocab-size", "16", "--d-model", "32", "--n-heads", "2", "--batch-size", "8",
          "--eval-size", "16", "--mix-div", "", "--out", str(tmp_path)])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["attn"] == "swa" and 0 <= out["accuracy"] <= 1
    rec = json.loads((tmp_path / "result.json").read_text())
    assert rec["config"]["query_start"] is None and len(rec["curve"]) == 1
    assert (tmp_path / "model.pt").exists()


def test_cli_given_options_win_over_the_preset_also_abbreviated():
    """argparse accepts unambiguous prefixes (``--step`` for ``--steps``): an option given that
    way is given all the same, and the preset does not override it."""
    cfg, _, max_seconds = parse_options(["--preset", "gpu", "--step", "5", "--seq-len=96",
                                         "--max-sec", "3"])
    assert (cfg.steps, cfg.seq_len, max_seconds) == (5, 96, 3.0)
    assert cfg.window == GPU_PRESET["window"] and cfg.batch_size == GPU_PRESET["batch_size"]
    cfg, _, max_seconds = parse_options(["--preset", "gpu"])
    assert cfg == TrainConfig(**GPU_PRESET) and max_seconds == GPU_MAX_SECONDS
    cfg, _, max_seconds = parse_options(["--window", "8", "--query-start", "-1"])
    assert cfg == TrainConfig(window=8, query_start=None) and max_seconds is None
    # Under torchrun the data streams follow the world size unless given (abbreviated or not).
    assert parse_options([], world=2)[0].data_streams == 2
    assert parse_options(["--data-str", "4"], world=2)[0].data_streams == 4


def test_recorded_cpu_comparison():
    """The experiment in figures/mqar/results_n256.json (the TrainConfig defaults): MHA and DMA
    solve MQAR at N = 256 with 16 pairs, SWA at the same window stays near chance."""
    data = json.loads((FIGURES / "mqar" / "results_n256.json").read_text())
    curves = json.loads((FIGURES / "mqar" / "curves_n256.json").read_text())
    assert set(data) == {"config", "accuracy"} and set(data["accuracy"]) == {"mha", "swa", "dma"}
    acc, cfg = data["accuracy"], data["config"]
    assert acc["mha"] >= 0.99 and acc["dma"] >= 0.99 and acc["swa"] < 0.05, acc
    assert cfg["seq_len"] == 256 and cfg["pairs"] >= 16
    assert cfg == {k: v for k, v in asdict(TrainConfig()).items() if k != "attn"} | {
        "mix_divisors": list(TrainConfig().mix_divisors)}, "the record is the TrainConfig defaults"
    # The queries sit beyond the sliding window's reach (2 layers of window w and the conv).
    assert not nb09.reachable_from(cfg["seq_len"], cfg["window"], cfg["n_layers"], cfg["query_start"],
                                   cfg["conv_kernel"])[:2 * cfg["pairs"]].any()
    assert set(curves["seconds"]) == {"mha", "swa", "dma"} and curves["steps_run"]["dma"] == cfg["steps"]
    assert (FIGURES / "mqar" / "comparison_n256.png").exists()


def test_gpu_preset_is_longer_and_out_of_swa_reach():
    """The GPU run is a longer task than the CPU one, and its queries are out of reach of the
    two sliding-window layers, as the comment on GPU_PRESET computes."""
    cfg = TrainConfig(**GPU_PRESET)
    assert cfg.seq_len > TrainConfig().seq_len and cfg.steps >= 1000
    reach = cfg.n_layers * (cfg.window - 1 + cfg.conv_kernel - 1)
    assert cfg.query_start - reach > 2 * cfg.pairs - 1
    assert not nb09.reachable_from(cfg.seq_len, cfg.window, cfg.n_layers, cfg.query_start,
                                   cfg.conv_kernel)[:2 * cfg.pairs].any()
    assert cfg.window_hold + cfg.window_anneal < cfg.steps          # trained at w for a while
    assert cfg.batch_size % 8 == 0                                  # splits over 1, 2, 4, 8 GPUs


def test_recorded_gpu_comparison():
    """figures/mqar/results_gpu.json, where a GPU run has been recorded: its format, and the
    measurements its curves file must carry."""
    path = FIGURES / "mqar" / "results_gpu.json"
    if not path.exists():
        pytest.skip("no GPU run recorded")
    data = json.loads(path.read_text())
    curves = json.loads((FIGURES / "mqar" / "curves_gpu.json").read_text())
    assert set(data) == {"config", "accuracy"} and set(data["accuracy"]) == {"mha", "swa", "dma"}
    cfg = data["config"]
    assert not nb09.reachable_from(cfg["seq_len"], cfg["window"], cfg["n_layers"], cfg["query_start"],
                                   cfg["conv_kernel"])[:2 * cfg["pairs"]].any()
    for metric in ("seconds", "steps_run", "tokens_per_s", "attention_share"):
        assert set(curves[metric]) == {"mha", "swa", "dma"}, metric
    assert curves["gpu"] and "synchronize" in curves["attention_share_method"]
    assert (FIGURES / "mqar" / "comparison_gpu.png").exists()
