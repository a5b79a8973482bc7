"""The Triton primer's puzzle checkers: each passes its solution (the solved notebook's kernel,
through tests/primer_solutions.py), rejects the unsolved stub, plausible wrong kernels and
bypasses (torch doing the work, the package's jit helpers, a non-kernel; tests/primer_wrong.py)."""

from __future__ import annotations

import primer_solutions as sol
import primer_wrong as bad
import pytest
import torch

from dma_ref.check import primer
from dma_ref.check.triton_run import PAD, SENTINEL, expect_close, guarded, output

# ---------------------------------------------------------------------------------- tests

CASES = [
    (primer.check_scale_add, sol.stub_1, sol.scale_add_ok,
     [bad.scale_add_no_mask, bad.scale_add_first_block_only]),
    (primer.check_add_row, sol.stub_2, sol.add_row_ok,
     [bad.add_row_contiguous, bad.add_row_row_mask_only]),
    (primer.check_row_sums, sol.stub_3, sol.row_sums_ok,
     [bad.row_sums_no_column_mask, bad.row_sums_one_tile]),
    (primer.check_row_softmax, sol.stub_4, sol.softmax_ok,
     [bad.softmax_other_zero, bad.softmax_no_max]),
    (primer.check_matmul, sol.stub_5, sol.matmul_ok,
     [bad.matmul_no_k_mask, bad.matmul_overwrites]),
    (primer.check_causal_logits, sol.stub_6, sol.causal_ok,
     [bad.causal_top_left, bad.causal_zero_fill, bad.causal_k_row_major]),
    (primer.check_gathered_logits, sol.stub_7, sol.gathered_ok,
     [bad.gathered_causal_only, bad.gathered_inclusive_end, bad.gathered_slot_not_key]),
    (primer.check_gathered_attention, sol.stub_8, sol.attention_ok,
     [bad.attention_nan_rows, bad.attention_no_rescale, bad.attention_no_list_mask]),
]
IDS = [c[0].__name__ for c in CASES]
BYPASSES = [
    (primer.check_row_softmax, bad.softmax_by_torch, "called torch"),
    (primer.check_row_softmax, bad.softmax_by_package_spec, "called torch"),
    (primer.check_row_softmax, bad.NotAKernel(), "pass the @triton.jit kernel"),
    (primer.check_gathered_logits, bad.gathered_by_package, "the package's keep_pairs"),
    (primer.check_gathered_attention, bad.attention_by_torch, "called torch"),
]


def three_seeds(rng: torch.Generator) -> list[int]:
    """Three checker seeds, new on every test run (the run's seed is in pytest's header)."""
    return torch.randint(0, 2**31 - 1, (3,), generator=rng).tolist()


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_stub_fails(checker, stub, solution, wrongs):
    assert not checker(stub)
    with pytest.raises(AssertionError, match="not attempted"):
        checker(stub, strict=True)


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_correct_solution_passes(checker, stub, solution, wrongs, rng):
    for seed in three_seeds(rng):
        result = checker(solution, strict=True, seed=seed)
        assert result and result.seed == seed


@pytest.mark.parametrize("checker, stub, solution, wrongs", CASES, ids=IDS)
def test_wrong_kernels_fail(checker, stub, solution, wrongs, rng):
    for wrong in wrongs:
        for seed in three_seeds(rng):       # several inputs: the failure must not be luck
            result = checker(wrong, seed=seed)
            assert not result and result.seed == seed, wrong.__name__
            assert f"seed {seed}" in result.message, result.message


@pytest.mark.parametrize("checker, bypass, why", BYPASSES, ids=[b[2] for b in BYPASSES])
def test_bypasses_fail(checker, bypass, why, rng):
    result = checker(bypass, seed=three_seeds(rng)[0])
    assert not result and why in result.message, result.message


def test_the_package_jit_helpers_work_again_after_a_check():
    """The guard against the package's helpers is lifted when the launch ends."""
    from triton.runtime.interpreter import InterpretedFunction
    before = InterpretedFunction.__call__
    assert not primer.check_gathered_logits(bad.gathered_by_package, seed=1)
    assert InterpretedFunction.__call__ is before
    assert primer.check_gathered_logits(sol.gathered_ok, seed=1)


def test_a_failure_names_shape_index_and_seed():
    result = primer.check_causal_logits(bad.causal_top_left, seed=11)
    assert not result
    assert "Q=" in result.message and "first at index (" in result.message
    assert "seed 11" in result.message and result.seed == 11
    again = primer.check_causal_logits(bad.causal_top_left, seed=11)
    assert again.message == result.message


def test_guarded_layouts_and_padding(rng):
    x = torch.randn(5, 7, generator=rng)
    for layout in ("contiguous", "padded", "transposed"):
        g = guarded(x, layout)
        assert torch.equal(g.view, x)
        assert torch.isnan(g.buffer[~g.inside]).all()
    assert guarded(x, "padded").view.stride() == (7 + 2 * PAD, 1)
    assert guarded(x, "transposed").view.stride() == (1, 5 + 2 * PAD)
    with pytest.raises(ValueError, match="layout"):
        guarded(x, "diagonal")
    z = output((4,))
    assert (z.view == SENTINEL).all()
    z.buffer[PAD + 4] = 0.0                       # one element past the end
    with pytest.raises(AssertionError, match="outside the output"):
        z.check_untouched("case")


def test_expect_close_names_the_first_wrong_index():
    want = torch.tensor([[0.0, float("-inf")], [1.0, 2.0]])
    expect_close(want.clone(), want, "same")
    got = want.clone()
    got[1, 0] = float("nan")
    with pytest.raises(AssertionError, match=r"first at index \(1, 0\): got nan"):
        expect_close(got, want, "case")


def test_the_notebook_stubs_match_the_checkers(tmp_path, monkeypatch):
    """The notebook's puzzle stubs, run as they stand: each reaches its checker (right signature)
    and is reported as not attempted; the notebook shows no solution."""
    import importlib
    import json
    from pathlib import Path

    cells = json.loads((Path(__file__).parents[1] / "notebooks/05_triton_primer.ipynb").read_text())
    stubs = ["".join(c["source"]) for c in cells["cells"]
             if c["cell_type"] == "code" and "# your code here" in "".join(c["source"])]
    assert len(stubs) == len(CASES)
    module = tmp_path / "notebook_stubs.py"
    module.write_text("import triton\nimport triton.language as tl\n\n\n" + "\n\n\n".join(stubs))
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = importlib.import_module("notebook_stubs")
    kernels = [v for k, v in vars(loaded).items() if k.endswith("_kernel")]
    for (checker, *_), kernel in zip(CASES, kernels):
        result = checker(kernel, seed=0)
        assert not result and "not attempted" in result.message, (kernel.__name__, result)
    assert all("tl.store" not in stub for stub in stubs)
