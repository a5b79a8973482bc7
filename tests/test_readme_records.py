"""The README's result tables say what the recorded results say (no drift after a new run).

Every number printed in the benchmark table (from ``figures/bench/h200.json``) and in the MQAR
tables (from ``figures/mqar/results_n256.json`` and ``curves_n256.json``, and on a GPU
``results_gpu.json`` and ``curves_gpu.json`` where recorded) must equal the record rounded to
the digits the README shows.
"""

from __future__ import annotations

import json
import re

import pytest

from dma_ref.paths import FIGURES, REPO_ROOT
from dma_ref.viz import perf

README = (REPO_ROOT / "README.md").read_text()


def table_after(marker: str) -> list[list[str]]:
    """The cells of the first markdown table after the line containing ``marker``."""
    lines = README[README.index(marker):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start + 2:]:                    # skip the header and its rule
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def agrees(printed: str, value: float) -> bool:
    """``printed`` (e.g. ``0.28``, ``22.6x``, ``1.39e6``, ``7%``, ``30 s``) is ``value`` rounded
    to the digits shown."""
    text = printed.rstrip("x% s")
    scale = 100.0 if printed.endswith("%") else 1.0
    mantissa, _, exp = text.partition("e")
    decimals = len(mantissa.partition(".")[2])
    unit = 10.0 ** (-decimals) * (10.0 ** int(exp) if exp else 1.0)
    return abs(float(text) - value * scale) <= unit / 2 + 1e-9


def pairs(cell: str) -> list[str]:
    return [p.strip() for p in cell.split("/")]


def test_benchmark_table_matches_h200_json():
    records = perf.select(perf.load_records(), D=128, window=1024)
    rows = table_after("`python -m dma_ref.lab.bench` (`figures/bench/h200.json`")
    assert [int(r[0]) for r in rows] == [4096, 16384, 65536, 131072]
    for n, dma, graph, cudnn, speedup, speedup_graph in rows:
        d = perf.select(records, method="dma_triton", N=int(n))[0]
        c = perf.select(records, method="sdpa_cudnn", N=int(n))[0]
        g = [perf.note_value(d, "graph_fwd_ms"), perf.note_value(d, "graph_fwdbwd_ms")]
        expected = [
            (dma, [d["fwd_ms"], d["fwdbwd_ms"]]),
            (graph, g),
            (cudnn, [c["fwd_ms"], c["fwdbwd_ms"]]),
            (speedup, [c["fwd_ms"] / d["fwd_ms"], c["fwdbwd_ms"] / d["fwdbwd_ms"]]),
            (speedup_graph, [c["fwd_ms"] / g[0], c["fwdbwd_ms"] / g[1]]),
        ]
        for cell, values in expected:
            for printed, value in zip(pairs(cell), values, strict=True):
                assert agrees(printed, value), (n, cell, printed, value)


@pytest.mark.parametrize("name, anchor", [("n256", "Recorded on a 2-core CPU"),
                                           ("gpu", "Recorded on one NVIDIA H200")])
def test_mqar_tables_match_their_records(name, anchor):
    path = FIGURES / "mqar" / f"results_{name}.json"
    if not path.exists():
        assert anchor not in README, f"the README shows a table of {path.name}, which is missing"
        pytest.skip(f"{path.name} not recorded")
    results = json.loads(path.read_text())
    curves = json.loads((FIGURES / "mqar" / f"curves_{name}.json").read_text())
    rows = table_after(anchor)
    assert [r[0] for r in rows] == ["MHA", "SWA", "DMA"]
    for row_name, _attention, acc, seconds, tokens, share in rows:
        m = row_name.lower()
        assert agrees(acc, results["accuracy"][m]), (m, acc)
        assert agrees(seconds, curves["seconds"][m]), (m, seconds)
        assert agrees(tokens, curves["tokens_per_s"][m]), (m, tokens)
        assert agrees(share, curves["attention_share"][m]), (m, share)
    window = re.search(r"sliding window, w = (\d+)", README[README.index(anchor):])
    assert int(window.group(1)) == results["config"]["window"]


@pytest.mark.parametrize("printed, value, ok", [
    ("0.28", 0.282, True), ("0.28", 0.286, False), ("22.6x", 22.56, True),
    ("1.39e6", 1388010, True), ("0.50e6", 499047, True), ("0.50e6", 506000, False),
    ("7%", 0.0677, True), ("30 s", 29.5, True), ("30 s", 31.0, False)])
def test_agrees_rounds_as_printed(printed, value, ok):
    assert agrees(printed, value) is ok


def test_paper_table_matches_its_records():
    """The README's table of the paper's comparison: perplexity and passkey per method."""
    ppl = json.loads((FIGURES / "paper" / "perplexity.json").read_text())["results"]
    pk = json.loads((FIGURES / "paper" / "passkey.json").read_text())["results"]
    rows = table_after("### The paper's comparison at CPU scale")
    assert [r[0] for r in rows] == ["mha", "swa", "mla", "nsa", "dma"]
    for m, params, kflops, loss, perplexity, within, beyond in rows:
        assert int(params) == ppl[m]["params"], m
        assert agrees(kflops, ppl[m]["flops_per_token"] / 1e3), (m, kflops)
        assert agrees(loss, ppl[m]["val_loss"]), (m, loss)
        assert agrees(perplexity, ppl[m]["perplexity"]), (m, perplexity)
        assert agrees(within, pk[m]["mean_within_train_len"]), (m, within)
        assert agrees(beyond, pk[m]["mean_beyond_train_len"]), (m, beyond)


def test_paper_mqar_table_matches_its_record():
    """The README's MQAR grid table: every (N, P, w, width) row of figures/paper/mqar.json."""
    from dma_ref.viz.paper import mqar_table

    record = json.loads((FIGURES / "paper" / "mqar.json").read_text())
    rows = table_after("accuracy on the MQAR grid")
    want = mqar_table(record)
    assert len(rows) == len(want)
    for row, r in zip(rows, want, strict=True):
        assert [int(x) for x in row[:4]] == [r["seq_len"], r["pairs"], r["window"], r["d_model"]]
        for printed, m in zip(row[4:], ("mha", "swa", "mla", "nsa", "dma"), strict=True):
            assert agrees(printed, r[m]), (row, m)


def test_paper_mqar_second_seed_sentence_matches_its_record():
    """The README's seed-1 DMA sentence: the four accuracies at w = P/2, in table order."""
    from dma_ref.viz.paper import mqar_table

    record = json.loads((FIGURES / "paper" / "seed1" / "mqar.json").read_text())
    assert record["seed"] == 1
    half = [r["dma"] for r in mqar_table(record) if r["d_model"] == 64 and r["window"] < r["pairs"]]
    full = [r["dma"] for r in mqar_table(record) if r["d_model"] == 64 and r["window"] == r["pairs"]]
    text = " ".join(README[README.index("A second seed for DMA"):].split("\n\n")[0].split())
    printed = re.search(r"at w = P/2 it ends at ([\d.]+), ([\d.]+), ([\d.]+) and ([\d.]+)", text)
    assert printed, text
    assert len(half) == 4 and all(agrees(p, v) for p, v in zip(printed.groups(), half, strict=True))
    assert "all four cells" in text and all(v >= 0.99 for v in full)
