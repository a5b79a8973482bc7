"""Data-parallel training (dma_ref.lab.train under torchrun): two gloo processes on the CPU train on
exactly the data one process draws with data_streams=2, and reach the same losses."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train import TINY as TRAIN_TINY

from dma_ref.lab.distributed import DistContext
from dma_ref.lab.train import TrainConfig, run_comparison, train
from dma_ref.lab.train.__main__ import main
from dma_ref.lab.train.config import DataStreams, stream_seed
from dma_ref.lab.train.loop import STOP_CHECK_EVERY

# test_train.py's TINY, with a short window curriculum so that it runs under DDP too.
TINY = {**TRAIN_TINY, "eval_every": 3, "window_hold": 2, "window_anneal": 2, "steps": 6, "lr": 3e-3}
ATTNS = ("mha", "swa", "dma")                 # dma: the naive backend on the CPU
WORLD = 2


def cli_args(cfg: dict) -> list[str]:
    args = []
    for k, v in cfg.items():
        args += ["--" + k.replace("_", "-"), str(-1 if v is None else v)]
    return args


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, runs: list[tuple[int, list[str]]], logs: str) -> None:
    """One torchrun-like rank: the env vars torchrun sets, then ``main(argv)`` for each run
    (each joins and leaves its own process group, on its own port). Its stdout and stderr go to
    logs/rank{rank}.out and .err (to check that only rank 0 speaks)."""
    for fd, ext in ((1, "out"), (2, "err")):
        f = os.open(os.path.join(logs, f"rank{rank}.{ext}"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(f, fd)
    os.environ.update(MASTER_ADDR="127.0.0.1", WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), TRITON_INTERPRET="1")
    torch.set_num_threads(1)
    for port, argv in runs:
        os.environ["MASTER_PORT"] = str(port)
        main(argv)


def spawn(argvs: list[list[str]], logs: Path, timeout: float = 120.0) -> None:
    """Run ``main(argv)`` for each of ``argvs`` on WORLD gloo ranks (one spawn: the imports
    are paid once); fail (and kill the ranks) if they hang."""
    runs = [(free_port(), argv) for argv in argvs]
    ctx = mp.start_processes(_worker, args=(WORLD, runs, str(logs)), nprocs=WORLD,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    try:
        while not ctx.join(timeout=1.0):
            assert time.monotonic() < deadline, f"ranks still running after {timeout} s (deadlock?)"
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.terminate()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict:
    """``--compare`` on two gloo ranks; returns its curves*.json record and the logs folder."""
    out = tmp_path_factory.mktemp("ddp")
    spawn([["--compare", "--device", "cpu", "--out", str(out), "--results-name", "results_ddp.json",
            "--checkpoint", str(out / "dma.pt"), *cli_args(TINY)],
           # One run out of time from the start: the ranks must stop together, at the first
           # agreement point (STOP_CHECK_EVERY), or the next collective would hang.
           ["--device", "cpu", "--attn", "dma", "--out", str(out / "timed"), "--max-seconds", "0",
            *cli_args({**TINY, "steps": 50})]], out)
    return {"curves": json.loads((out / "curves_ddp.json").read_text()),
            "results": json.loads((out / "results_ddp.json").read_text()),
            "timed": json.loads((out / "timed" / "result.json").read_text()), "out": out}


@pytest.fixture(scope="module")
def single_runs() -> dict:
    """One process on the same global batches (data_streams=2) and on other data (1 stream)."""
    torch.set_num_threads(2)
    return {s: run_comparison(TrainConfig(**{**TINY, "data_streams": s}), progress=False, attns=attns)
            for s, attns in ((2, ATTNS), (1, ("dma",)))}


def test_two_ranks_match_one_process_with_two_streams(ddp_run, single_runs):
    curves, one = ddp_run["curves"], single_runs[2]
    assert curves["world_size"] == WORLD and ddp_run["results"]["config"]["data_streams"] == WORLD
    for a in ATTNS:
        got, want = curves["loss_curves"][a], one["loss_curves"][a]
        assert [s for s, _ in got] == [s for s, _ in want] == [3, 6]
        for (_, lg), (_, lw) in zip(got, want):
            assert lg == pytest.approx(lw, rel=1e-4), (a, got, want)      # float reduction order
        assert curves["curves"][a] == one["curves"][a], a                # same held-out counts
        assert ddp_run["results"]["accuracy"][a] == one["accuracy"][a]


def test_the_comparison_can_fail_other_data_gives_other_losses(ddp_run, single_runs):
    got, other = ddp_run["curves"]["loss_curves"]["dma"], single_runs[1]["loss_curves"]["dma"]
    assert abs(got[-1][1] - other[-1][1]) > 1e-3 * abs(other[-1][1]), (got, other)


def test_rank0_writes_and_speaks_alone(ddp_run):
    out = ddp_run["out"]
    for name in ("results_ddp.json", "curves_ddp.json", "comparison_ddp.png", "dma.pt"):
        assert (out / name).exists(), name
    lines = (out / "rank0.out").read_text().strip().splitlines()
    assert len(lines) == 2                                      # one summary per run
    summary = json.loads(lines[0])
    assert summary["world_size"] == WORLD and set(summary["accuracy"]) == set(ATTNS)
    assert (out / "rank1.out").read_text() == ""
    assert "it/s" not in (out / "rank1.err").read_text()       # no progress bar on rank 1
    assert "it/s" in (out / "rank0.err").read_text() or "s/it" in (out / "rank0.err").read_text()
    for a in ATTNS:                                             # measurements recorded per model
        assert ddp_run["curves"]["steps_run"][a] == TINY["steps"]
        assert ddp_run["curves"]["tokens_per_s"][a] > 0


def test_ranks_stop_together_when_out_of_time(ddp_run):
    timed = ddp_run["timed"]
    assert timed["steps_run"] == STOP_CHECK_EVERY and timed["world_size"] == WORLD
    assert timed["curve"][-1][0] == STOP_CHECK_EVERY
    assert (ddp_run["out"] / "timed" / "model.pt").exists()


def test_data_streams_concatenate_in_stream_order():
    cfg = TrainConfig(**{**TINY, "data_streams": 2})
    both, short = DataStreams(cfg).next()               # seq_len, then seq_len / 2 (mix_divisors)
    parts = [DataStreams(cfg, [r]).next()[0] for r in range(2)]
    assert short.inputs.shape == (32, 8)
    assert both.inputs.shape == (16, 16) and parts[0].inputs.shape == (8, 16)
    torch.testing.assert_close(both.inputs, torch.cat([p.inputs for p in parts]))
    torch.testing.assert_close(both.targets, torch.cat([p.targets for p in parts]))
    # One stream is exactly the generator seeded with `seed` (the recorded runs' data).
    one = DataStreams(TrainConfig(**TINY)).next()[0]
    want = TrainConfig(**TINY).batch(16, torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.inputs, want.inputs)
    assert not torch.equal(parts[1].inputs, parts[0].inputs)
    assert len({stream_seed(0, r) for r in range(8)} | {10_000}) == 9   # never the held-out seed


@pytest.mark.parametrize("batch,world,match", [
    (16, 3, r"batch_size=16 is not divisible by the world size 3"),
    (15, 2, r"batch_size=15 is not divisible by the world size 2"),
])
def test_batch_not_divisible_by_world_size_is_a_clear_error(batch, world, match):
    cfg = TrainConfig(**{**TINY, "batch_size": batch, "data_streams": world})
    with pytest.raises(ValueError, match=match):
        train(cfg, dist=DistContext(world_size=world, rank=0), progress=False)


def test_cli_checks_the_split_before_joining_a_process_group(monkeypatch):
    # WORLD_SIZE=3 as torchrun would set it; no MASTER_ADDR: the error must come first.
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match=r"batch_size=16 is not divisible by the world size 3"):
        main(["--device", "cpu", *cli_args(TINY)])
    with pytest.raises(ValueError, match=r"data_streams=2 must equal the world size 3"):
        main(["--device", "cpu", "--data-streams", "2", *cli_args({**TINY, "batch_size": 18})])


def test_data_streams_must_divide_the_batch():
    with pytest.raises(ValueError, match=r"batch_size=16 must be divisible by data_streams=3"):
        train(TrainConfig(**{**TINY, "data_streams": 3}), progress=False)


def test_single_process_ignores_world_size_one(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "1")
    res = main(["--device", "cpu", "--attn", "mha", "--out", str(tmp_path), *cli_args(TINY)])
    assert res["world_size"] == 1 and math.isfinite(res["loss"])
    assert json.loads((tmp_path / "result.json").read_text())["config"]["data_streams"] == 1


def test_nvlink_multicast_is_forced_off(monkeypatch):
    """init_distributed turns NVLink multicast off even where the environment turned it on
    (on shared multi-GPU hosts it can take every GPU of the host out of service)."""
    import torch.distributed as dist

    from dma_ref.lab import distributed
    for name in distributed.MULTICAST_OFF:            # restored after the test
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(dist, "is_initialized", lambda: True)     # no process group started
    ctx = distributed.init_distributed("cpu")
    assert ctx.world_size == 2 and ctx.backend == "gloo"
    for name, value in distributed.MULTICAST_OFF.items():
        assert os.environ[name] == value
