"""The paper experiments (dma_ref.lab.paper): the smoke slice of the one command, the record
format, resume, the passkey generator, equal parameters and FLOPs per token."""

from __future__ import annotations

import json

import pytest
import torch

from dma_ref.lab.paper import METHODS, passkey, perplexity
from dma_ref.lab.paper.__main__ import main
from dma_ref.lab.paper.sizing import equal_params, flops_per_token, keys_read, params_of
from dma_ref.lab.tasks import IGNORE
from dma_ref.nn import ModelConfig


def test_smoke_command_writes_every_record_and_figure(tmp_path):
    threads = torch.get_num_threads()
    try:
        main(["all", "--smoke", "--out", str(tmp_path), "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    for name in ("perplexity", "passkey", "mqar"):
        rec = json.loads((tmp_path / f"{name}.json").read_text())
        assert set(rec) >= {"config", "seed", "versions", "wall_seconds", "results"}
        assert tuple(sorted(rec["results"])) == tuple(sorted(METHODS)), name
        assert rec["versions"]["torch"] == torch.__version__
        assert (tmp_path / f"{name}.png").stat().st_size > 1000
    before = (tmp_path / "passkey.json").read_text()
    main(["passkey", "--smoke", "--out", str(tmp_path), "--resume", "--no-progress",
          "--no-figures"])
    assert (tmp_path / "passkey.json").read_text() == before          # nothing left to train


def test_seed_option_reaches_the_record(tmp_path):
    threads = torch.get_num_threads()
    try:
        main(["mqar", "--smoke", "--seed", "3", "--out", str(tmp_path), "--no-progress",
              "--no-figures", "--threads", "1"])
    finally:
        torch.set_num_threads(threads)
    rec = json.loads((tmp_path / "mqar.json").read_text())
    assert rec["seed"] == rec["config"]["seed"] == rec["recipe"]["seed"] == 3


def test_methods_and_widths_pick_cells_that_resume_into_the_grid(tmp_path):
    threads = torch.get_num_threads()
    args = ["mqar", "--smoke", "--out", str(tmp_path), "--no-progress", "--no-figures",
            "--threads", "1"]
    try:
        main([*args, "--methods", "dma,swa", "--widths", "16"])
        part = json.loads((tmp_path / "mqar.json").read_text())
        assert set(part["results"]) == {"dma", "swa"}
        main([*args, "--resume"])
    finally:
        torch.set_num_threads(threads)
    full = json.loads((tmp_path / "mqar.json").read_text())
    assert set(full["results"]) == set(METHODS)
    assert full["results"]["dma"] == part["results"]["dma"]            # kept, not retrained
    with pytest.raises(SystemExit):
        main([*args, "--methods", "dma,gqa"])
    with pytest.raises(SystemExit):
        main(["passkey", "--smoke", "--widths", "16"])
    with pytest.raises(ValueError, match="widths"):
        main([*args, "--widths", "64"])


def test_passkey_batch(rng):
    x, y = passkey.passkey_batch(64, 30, digits=4, vocab_size=20, generator=rng, depth=0.5)
    start = round(0.5 * (30 - 10))
    assert (x[:, start] == passkey.KEY).all()
    assert torch.equal(x[:, start + 1:start + 5], y[:, -4:])
    assert (x[:, -4] == passkey.ASK).all() and torch.equal(x[:, -3:], y[:, -4:-1])
    assert (y[:, :-4] == IGNORE).all()
    others = torch.ones(30, dtype=torch.bool)
    others[start:start + 5] = False
    others[-4:] = False
    assert (x[:, others] >= passkey.FIRST_FILLER).all() and (x < 20).all()
    for depth in (0.0, 1.0):
        x, _ = passkey.passkey_batch(4, 30, digits=4, vocab_size=20, generator=rng, depth=depth)
        assert (x[:, round(depth * 20)] == passkey.KEY).all()
    with pytest.raises(ValueError, match="length"):
        passkey.passkey_batch(2, 9, digits=4, vocab_size=20, generator=rng)


def test_exact_match_needs_every_digit():
    class Echo(torch.nn.Module):          # predicts the target everywhere but one digit
        def forward(self, x):
            logits = torch.zeros(*x.shape, 20)
            logits[0, -2, 3] = 1.0
            logits[:, -4:].scatter_(-1, self.y[:, -4:, None], 5.0)
            return logits
    x, y = passkey.passkey_batch(3, 20, digits=4, vocab_size=20,
                                 generator=torch.Generator().manual_seed(0))
    m = Echo()
    m.y = y.clone()
    assert passkey.exact_match(m, x, y) == 1.0
    m.y[0, -2] = (y[0, -2] + 1) % 10
    assert passkey.exact_match(m, x, y) == pytest.approx(2 / 3)


def test_equal_params_and_flops():
    base = ModelConfig(vocab_size=256, d_model=64, n_layers=2, n_heads=4, window=64)
    target = params_of(ModelConfig(**{**base.to_dict(), "attn": "mha"}))
    for attn in METHODS:
        cfg = equal_params(base, attn)
        assert abs(params_of(cfg) - target) <= 3 * 64 * 2, attn      # within one hidden unit
    assert keys_read("mha", 9, 4) == {"causal": 10}
    assert keys_read("dma", 9, 4) == {"window": 4}
    # nsa_sizes(16): block 2, stride 1, select 4, n 4: at t = 20 blocks 0..5 exist, 4 kept.
    assert keys_read("nsa", 20, 16) == {"compressed": 20, "selected": 3 * 4 + 1, "window": 16}
    f = {a: flops_per_token(equal_params(base, a), 256) for a in METHODS}
    assert f["dma"] < f["mha"] and f["swa"] < f["mha"]
    # MHA's attention at N = 256: 2 FLOPs x 4 heads x (16 + 16) x 128.5 keys x 2 layers more
    # than SWA's with 64 keys (same linear layers).
    window_reads = sum(min(64, t + 1) for t in range(256)) / 256
    assert f["mha"] - f["swa"] == round(2 * 4 * 32 * (128.5 - window_reads) * 2)


def test_perplexity_split_is_disjoint():
    data = perplexity.corpus_bytes()
    train, val = perplexity.split(data, 0.1)
    assert len(train) + len(val) == len(data) > 400_000
    assert torch.equal(torch.cat([train, val]), data.long())
    x, y = perplexity.validation_set(val, 5, 32)
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (5, 32)


def test_nb12_checker_fails_on_stub_wrong_and_package(rng):
    from dma_ref.check import nb12
    from dma_ref.course import solutions
    from dma_ref.lab.paper import sizing

    def stub(t, L, n):
        raise NotImplementedError

    def wrong(t, L, n):                 # forgets that the own block is only read up to t
        return min(n * L, t + 1)

    def package(t, L, n):
        return sizing.keys_read("nsa", t, 8 * L)["selected"]

    for seed in torch.randint(0, 2**31, (3,), generator=rng).tolist():
        for fn in (stub, wrong, package):
            assert not nb12.check_selected_tokens(fn, seed=seed), (fn.__name__, seed)
        result = nb12.check_selected_tokens(solutions("12").selected_tokens, seed=seed)
        assert result and result.seed == seed


def test_mqar_table_keeps_pair_counts_apart():
    """(N = 128, w = 16) is w = P at P = 16 and w = P/2 at P = 32: two rows, each with its own
    MHA (trained once per (N, P, width))."""
    from dma_ref.viz.paper import mqar_markdown, mqar_table, plot_mqar

    def run(P, w, acc):
        return {"seq_len": 128, "pairs": P, "window": w, "d_model": 64, "accuracy": acc}

    record = {"results": {"mha": {"a": run(16, 8, 0.9), "b": run(32, 16, 0.7)},
                          "dma": {"c": run(16, 16, 0.8), "d": run(32, 16, 0.5),
                                  "e": run(16, 8, 0.4)}}}
    rows = mqar_table(record)
    assert [(r["pairs"], r["window"], r["mha"], r["dma"]) for r in rows] == [
        (16, 8, 0.9, 0.4), (16, 16, 0.9, 0.8), (32, 16, 0.7, 0.5)]
    assert mqar_markdown(record).count("\n") == 2 + len(rows) - 1
    fig = plot_mqar(record)
    assert sum(ax.get_visible() for ax in fig.axes) == 3
