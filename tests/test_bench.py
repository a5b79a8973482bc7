"""The benchmark's parts that run without a GPU: record schema, CLI, FLOP/byte formulas, the
GPU-side lifetime builder (run on the CPU here) and the plots on synthetic records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from dma_ref import dma_mask, flops, key_lifetimes
from dma_ref.lab.bench import inputs as bench_inputs
from dma_ref.lab.bench import records as bench
from dma_ref.lab.bench import run as bench_run
from dma_ref.viz import perf

ROOT = Path(__file__).resolve().parents[1]
ENV = {"gpu": "NVIDIA H200", "torch": "2.11.0+cu130", "triton": "3.6.0"}


def record(method="dma_triton", N=4096, window=1024, D=128, fwd=1.0, fb=3.0, note=""):
    return bench.make_record(ENV, B=1, Hq=8, Hkv=2, D=D, N=N, window=window, method=method,
                             fwd_ms=fwd, fwdbwd_ms=fb, peak_mem_bytes=123, note=note)


# ------------------------------------------------------------------------------ schema, CLI


def test_record_has_exactly_the_schema_keys():
    rec = record()
    assert tuple(rec) == bench.RECORD_KEYS
    assert rec["dtype"] == "torch.bfloat16" and rec["causal"] is True
    json.loads(json.dumps(rec))                        # plain JSON types only


@pytest.mark.parametrize("change", [
    {"extra": 1}, {"method": "dma"}, {"fwd_ms": -1.0}, {"fwd_ms": float("nan")}, {"N": 0},
    {"window": 2.5}, {"peak_mem_bytes": -3}, {"fwd_ms": None, "note": ""},
])
def test_validate_record_rejects(change):
    rec = dict(record(), **change)
    with pytest.raises((ValueError, TypeError)):
        bench.validate_record(rec)


def test_unmeasured_record_needs_a_reason():
    rec = record(fwd=None, fb=None, note="OOM")
    assert rec["fwd_ms"] is None and rec["note"] == "OOM"


@pytest.mark.skipif(not (ROOT / "figures/bench/h200.json").exists(),
                    reason="no recorded results yet")
def test_recorded_results_follow_the_schema():
    records = json.loads((ROOT / "figures/bench/h200.json").read_text())
    assert records, "h200.json is empty"
    for rec in records:
        bench.validate_record(rec)
        assert set(rec) == set(bench.RECORD_KEYS)
    assert {r["method"] for r in records} <= set(bench.METHODS)


def test_bench_without_cuda_exits_nonzero_with_a_clear_message():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "dma_ref.lab.bench", "--n", "4096"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "needs a CUDA GPU" in proc.stderr


def test_fill_missing_completes_the_grid():
    recs = [record("sdpa_cudnn", 4096, 1024)]
    full = bench.fill_missing(recs, ns=[4096, 16384], windows=[1024, None], ds=[128],
                              methods=["sdpa_cudnn", "dma_triton"], reason="not run: device time")
    assert len(full) == 2 * 2 * 2 and full[0] is recs[0]
    assert all(r["fwd_ms"] is None and r["note"] == "not run: device time" for r in full[1:])


def test_cli_parsing():
    args = bench_run.parse_args(["--n", "4096", "--window", "256", "dense", "--d", "64",
                                 "--fwd-only"])
    assert args.n == [4096] and args.windows == [256, None] and args.d == [64] and args.fwd_only
    assert bench.windows_for(4096, [256, 1024, 4096, None]) == [256, 1024, 4096]
    assert bench.windows_for(65536, [256, None]) == [256, 65536]
    with pytest.raises(SystemExit):
        bench_run.parse_args(["--hq", "6", "--hkv", "4"])
    with pytest.raises(ValueError):
        bench.parse_windows(["0"])


def test_time_cap_prediction_scales_quadratically():
    hist = {("sdpa_cudnn", 128, 1024, 4096, "fwd"): 1.0,
            ("sdpa_cudnn", 128, 1024, 16384, "fwd"): 10.0}
    pred = bench_run.predicted_ms(hist, "sdpa_cudnn", 128, 1024, 65536, "fwd")
    assert pred == pytest.approx(160.0)
    assert bench_run.predicted_ms(hist, "sdpa_cudnn", 128, 1024, 4096, "fwd") is None


def test_resume_reuses_each_w_independent_result_from_its_measured_record():
    recs = [record("sdpa_cudnn", 4096, 256, note="k, v repeated"),
            record("sdpa_cudnn", 4096, 1024,
                   note="k, v repeated; independent of w: measured once per (D, N), at w=256"),
            record("sdpa_flash", 4096, 4096, note="dense regime (w >= N); k, v repeated"),
            record("sdpa_efficient_bias", 4096, 256, note="bias build"),
            record("dma_triton", 4096, 256),
            record("sdpa_cudnn", 16384, 256, note="other N")]
    once = bench_run.resumed_once(recs, 128, 4096, once_from=65536)
    assert set(once) == {"sdpa_cudnn", "sdpa_flash"}
    assert (once["sdpa_cudnn"].window, once["sdpa_cudnn"].notes) == (256, ["k, v repeated"])
    assert once["sdpa_flash"].notes == ["k, v repeated"]       # the regime belongs to the window
    assert "sdpa_efficient_bias" in bench_run.resumed_once(recs, 128, 4096, once_from=4096)


def test_resume_of_the_recorded_results_finds_the_measured_windows():
    recs = json.loads((ROOT / "figures" / "bench" / "h200.json").read_text())
    copies = [r for r in recs if "independent of w: measured once" in r["note"]]
    assert copies
    for r in copies:
        m = bench_run.resumed_once(recs, r["D"], r["N"], once_from=65536)[r["method"]]
        assert f"at w={m.window}" in r["note"]
        assert (m.fwd_ms, m.fwdbwd_ms, m.peak_mem_bytes) == (r["fwd_ms"], r["fwdbwd_ms"],
                                                             r["peak_mem_bytes"])


# ----------------------------------------------------------------------------- FLOPs, bytes


def test_pair_counts_on_tiny_cases():
    assert [flops.causal_pairs(n) for n in (1, 2, 4)] == [1, 3, 10]
    assert flops.dma_kept_pairs(5, 2) == 1 + 2 + 2 + 2 + 2
    assert flops.dma_kept_pairs(4, 9) == flops.causal_pairs(4)
    # BM = 2, N = 5, w = 1: blocks of 2, 2, 1 rows end at p = 1, 3, 4 -> unions
    # min(w + rows - 1, p + 1) = 2, 2, 1
    assert flops.dma_work_pairs(5, 1, BM=2) == 2 * 2 + 2 * 2 + 1 * 1
    assert flops.dma_union_keys(5, 1, BM=2) == 5


@pytest.mark.parametrize("N, w, BM", [(37, 5, 8), (64, 16, 16), (50, 64, 16), (33, 1, 4)])
def test_dma_counts_match_the_mask(N, w, BM):
    s = torch.randn(1, 1, N).to(torch.bfloat16).float()       # bf16: ties included
    keep = dma_mask(s, w)[0, 0]
    assert int(keep.sum()) == flops.dma_kept_pairs(N, w)
    work = 0
    for start in range(0, N, BM):
        block = keep[start:start + BM]
        union = int(block.any(0).sum())                      # keys the block must gather
        assert union <= min(w + BM - 1, start + block.shape[0])
        work += block.shape[0] * union
    assert work <= flops.dma_work_pairs(N, w, BM)
    # Increasing scores make every row a sliding window: each block's union reaches the bound.
    keep = dma_mask(torch.arange(N, dtype=torch.float32).reshape(1, 1, N), w)[0, 0]
    exact = sum(keep[b:b + BM].shape[0] * int(keep[b:b + BM].any(0).sum()) for b in range(0, N, BM))
    assert exact == flops.dma_work_pairs(N, w, BM)


def test_flops_bytes_and_floor():
    assert flops.attention_flops(1, 1, 1) == 4
    assert flops.attention_flops(1, 1, 1, backward=True) == 14
    assert flops.attention_flops(10, 64, 8, 2) == 4 * 10 * 64 * 8 * 2
    # N = D = Hq = Hkv = 1, bf16: read q, k, v, s (2 + 4 + 2), write o (2) and fp32 lse (4)
    assert flops.attention_bytes(1, 1, 1, 1) == 14
    assert flops.attention_bytes(1, 1, 1, 1, scores=False) == 12
    want = 14 + (2 + 4 + 2 + 2 + 2 + 4) + (2 + 4 + 2)
    assert flops.attention_bytes(1, 1, 1, 1, backward=True) == want
    f = flops.floor(790_000_000_000, 4_300_000_000)          # 1 ms of each
    assert f.compute_ms == pytest.approx(1.0) and f.memory_ms == pytest.approx(1.0)
    assert flops.floor(10**12, 1).bound == "compute" and flops.floor(1, 10**12).bound == "memory"


def test_work_ratio_and_crossover():
    assert flops.work_ratio(16384, 1024) == pytest.approx(7.35, abs=0.01)   # DESIGN.md: "about 7x"
    n = flops.crossover_n(1024)
    def model(N):
        return N * (1024 + 128) <= N * (N + 1) / 4
    assert model(n) and not model(n - 1)


# ------------------------------------------------------------------------- lifetimes (CPU)


def test_dense_mask_and_bias_from_lifetimes():
    s = torch.randn(1, 2, 70).to(torch.bfloat16)
    e = key_lifetimes(s, 9)
    keep = bench_inputs.dense_mask_from_lifetimes(e, rows=16)          # 70 = 4 chunks + 6 rows
    assert torch.equal(keep, dma_mask(s, 9))
    bias = bench_inputs.dense_bias_from_lifetimes(e, s, rows=30)
    assert torch.equal(torch.isfinite(bias), keep)
    assert torch.equal(bias[keep], s[:, :, None, :].expand_as(bias)[keep])


# ---------------------------------------------------------------------------------- plots


def synthetic_records():
    recs = []
    for D in (128, 64):
        for N in (4096, 16384, 65536):
            for w in (256, 1024, N):
                recs.append(record("sdpa_cudnn", N, w, D, fwd=N * N / 2e8, fb=N * N / 5e7))
                recs.append(record("dma_triton", N, w, D, fwd=N * (w + 128) / 1e9 + 0.02,
                                   fb=N * (w + 128) / 2e8 + 0.05))
                recs.append(record("official_triton", N, w, D, fwd=None, fb=None, note="time cap"))
    return recs


def test_series_speedup_and_table():
    recs = synthetic_records()
    n, t = perf.series(recs, "dma_triton", D=128, window=1024)
    assert n == [4096, 16384, 65536] and len(t) == 3
    assert perf.series(recs, "official_triton") == ([], [])
    sp = perf.speedup(recs, "dma_triton", "fwd_ms", D=128, window=1024)
    assert sp[65536] == pytest.approx((65536**2 / 2e8) / (65536 * 1152 / 1e9 + 0.02), rel=1e-3)
    dense = perf.series(recs, "dma_triton", D=64, window="dense")
    assert dense[0] == [4096, 16384, 65536]
    rows = perf.table_rows(recs, D=128, window=1024)
    assert len(rows) == 9 and rows[0]["x_fwd_ms"] == pytest.approx(1.0)
    md = perf.format_table(rows, notes=True)
    assert md.count("\n") == 10 and "time cap" in md


def test_note_value_reads_numbers_from_notes():
    rec = {"note": "build_ms=0.2863; lifetimes_ms=0.37; graph_fwd_ms=2.7225; tuned_fwd=BN32/GH4"}
    assert perf.note_value(rec, "graph_fwd_ms") == 2.7225
    assert perf.note_value(rec, "build_ms") == 0.2863
    assert perf.note_value(rec, "fwd_ms") is None          # not a suffix of graph_fwd_ms
    assert perf.note_value(rec, "tuned_fwd") is None       # not a number
    assert perf.note_value({"note": None}, "build_ms") is None
    recorded = perf.select(perf.load_records(), method="dma_triton", D=128, N=131072, window=1024)
    assert perf.note_value(recorded[0], "fwd_kernel_ms") < recorded[0]["fwd_ms"]


def test_plot_functions_draw_every_measured_method(tmp_path, monkeypatch):
    recs = synthetic_records()
    fig = perf.plot_time_vs_n(recs, D=128, window=1024)
    labels = [l.get_label() for l in fig.axes[0].lines]
    assert "dma_triton" in labels and "sdpa_cudnn" in labels and "official_triton" not in labels
    assert "floor: dense causal" in labels
    fig = perf.plot_speedup_vs_n(recs, D=128, window=1024)
    assert next(line.get_label() for line in fig.axes[1].lines) == "dma_triton"
    fig = perf.plot_speedup_vs_window(recs, D=64)
    assert len(fig.axes[0].lines) == 3 + 1                   # one line per N + the y = 1 line
    saved = []
    monkeypatch.setattr(perf, "save_figure",
                        lambda f, name: saved.append(tmp_path / name) or tmp_path / name)
    paths = perf.make_all(recs)
    assert len(paths) == 8 and all(str(p).endswith(".png") for p in paths)
