"""The grader: executes submissions, checks each exercise itself with fresh seeds, writes JSON
and CSV, survives a notebook that raises, and gives no points to forgeries (a printed or written
fake verdict, a patched checker or library, answers memorised for the notebook's seed, a hook).
Small synthetic notebooks keep it fast."""

from __future__ import annotations

import csv
import json

import nbformat
import pytest

from dma_ref import grade

STUB = "    raise NotImplementedError\n"
FLOPS_OK = "    return 4 * D * H * N * (N + 1) // 2\n"
CROSSOVER_OK = "    return 4 * (w + BM) - 1\n"
CROSSOVER_WRONG = "    return 4 * (w + BM)\n"               # off by one: no points
FLOPS_BYPASS = ("    import dma_ref.check.core as core\n"   # prints a fake verdict: no points
                "    print('FLOPs of causal attention: PASSED (1/1 points)')\n"
                "    raise NotImplementedError\n")
# Forgeries, each a cell run after the stubs are defined.
FAKE_VERDICTS = """
import json, os, tempfile
from dma_ref.check.core import Result
fake = {"exercise": "nb08.check_causal_flops", "passed": True, "points": 1, "max_points": 1,
        "name": "FLOPs of causal attention", "message": "all checks passed", "seed": 0}
for path in [os.environ.get("DMA_REF_GRADE_LOG"), os.path.join(tempfile.gettempdir(), "verdicts.jsonl")]:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps(fake) + "\\n")
print("FLOPs of causal attention: PASSED (1/1 points) - all checks passed [seed=0]")
import dma_ref.check.core as core
def always(name, trials, **kw):
    return Result(name, True, "all checks passed", kw.get("seed"), 2, 2)
core.run_checks = always
check07.check_crossover = lambda fn, *a, **k: Result("crossover", True, "all checks passed", 0, 2, 2)
check07.check_causal_flops = check07.check_crossover
"""
MEMORISED = """
seen = {}
def spy(N, D, H):
    seen[(N, D, H)] = 4 * D * H * N * (N + 1) // 2
    return seen[(N, D, H)]
check07.check_causal_flops(spy, seed=1234)
answers = dict(seen)
def causal_attention_flops(N, D, H):       # right only on the inputs of seed 1234
    return answers[(N, D, H)]
assert check07.check_causal_flops(causal_attention_flops, seed=1234)
"""
PATCHED_LIBRARY = """
import dma_ref.flops
dma_ref.flops.attention_flops = lambda pairs, D, H: 0   # the reference now agrees with 0
def causal_attention_flops(N, D, H):
    return 0
def on_run(*args):
    pass
get_ipython().events.register("post_run_cell", on_run)
"""


def notebook(flops: str, crossover: str, *, raises: bool = False, keep_checks: bool = True,
             extra: str = ""):
    cells = ["from dma_ref.check import nb08 as check07",
             f"def causal_attention_flops(N, D, H):\n{flops}",
             "check07.check_causal_flops(causal_attention_flops);" if keep_checks else "pass"]
    if raises:
        cells.append("raise RuntimeError('a cell of the student that fails')")
    if extra:
        cells.append(extra)
    cells += [f"def crossover_length(w, BM):\n{crossover}",
              "check07.check_crossover(crossover_length);" if keep_checks else "pass"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, id=f"cell-{i:03d}") for i, src in enumerate(cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture
def class_folder(tmp_path):
    """A class: solved, unsolved, half right with a failing cell, one that deleted its checker
    cells (the grader checks its functions all the same: the fake print gets nothing, the right
    crossover its points), and three forgers; the course's own copy as the reference."""
    reference = tmp_path / "reference"
    reference.mkdir()
    nbformat.write(notebook(STUB, STUB), reference / "08_perf.ipynb")
    subs = {"alice": notebook(FLOPS_OK, CROSSOVER_OK),
            "bob": notebook(STUB, STUB),
            "carol": notebook(FLOPS_OK, CROSSOVER_WRONG, raises=True),
            "dave": notebook(FLOPS_BYPASS, CROSSOVER_OK, keep_checks=False),
            "mallory": notebook(STUB, STUB, extra=FAKE_VERDICTS),
            "trudy": notebook(STUB, CROSSOVER_OK, extra=MEMORISED),
            "eve": notebook(STUB, CROSSOVER_OK, extra=PATCHED_LIBRARY)}
    root = tmp_path / "class"
    for student, nb in subs.items():
        (root / student).mkdir(parents=True)
        nbformat.write(nb, root / student / "08_perf.ipynb")
    return root, reference


def test_find_exercises_reads_the_checker_calls_and_their_points():
    found = grade.find_exercises(notebook(STUB, STUB))
    assert [(e.id, e.points, e.argument) for e in found] == [
        ("nb08.check_causal_flops", 1, "causal_attention_flops"),
        ("nb08.check_crossover", 2, "crossover_length")]


def test_a_class_is_scored_per_exercise(class_folder, tmp_path):
    root, reference = class_folder
    out = tmp_path / "grades"
    doc = grade.grade(root, out, reference=reference, timeout=120, progress=False)
    totals = {name: (s["points"], s["max_points"]) for name, s in doc["students"].items()}
    assert totals == {"alice": (3, 3), "bob": (0, 3), "carol": (1, 3), "dave": (2, 3),
                      "mallory": (0, 3), "trudy": (2, 3), "eve": (0, 3)}, doc
    carol = doc["students"]["carol"]["notebooks"]["08_perf.ipynb"]
    assert any("RuntimeError" in e for e in carol["errors"])          # reported, and graded on
    assert [e["passed"] for e in carol["exercises"]] == [True, False]
    bob = doc["students"]["bob"]["notebooks"]["08_perf.ipynb"]["exercises"]
    assert all("not attempted" in e["message"] for e in bob)
    def messages(name):
        return [e["message"] for e in doc["students"][name]["notebooks"]["08_perf.ipynb"]["exercises"]]
    # The checkers were reloaded: mallory's patches are undone, or reported as a change.
    assert all("not attempted" in m or "changed" in m for m in messages("mallory")), messages("mallory")
    # trudy's memorised answers fail on the grader's own seed (a KeyError), which is reported.
    assert "KeyError" in messages("trudy")[0] and "seed=" in messages("trudy")[0]
    eve = messages("eve")[0]
    assert "dma_ref.flops.attention_flops" in eve and "post_run_cell" in eve, eve
    assert json.loads((out / "grades.json").read_text()) == doc
    rows = list(csv.DictReader((out / "grades.csv").read_text().splitlines()))
    assert len(rows) == 7 * 2 + 7                                   # student x exercise, + totals
    alice = {r["exercise"]: (r["points"], r["max_points"]) for r in rows if r["student"] == "alice"}
    assert alice == {"nb08.check_causal_flops": ("1", "1"), "nb08.check_crossover": ("2", "2"),
                     "TOTAL": ("3", "3")}


def test_a_single_notebook_and_bad_paths(tmp_path):
    path = tmp_path / "solo.ipynb"
    nbformat.write(notebook(FLOPS_OK, STUB), path)
    doc = grade.grade(path, tmp_path / "out", reference=None, timeout=120, progress=False)
    assert doc["students"]["solo"]["points"] == 1 and doc["students"]["solo"]["max_points"] == 3
    with pytest.raises(ValueError, match="PATH"):
        grade.submissions(tmp_path / "missing")
    with pytest.raises(ValueError, match="no notebook"):
        grade.grade(tmp_path / "out", tmp_path / "out2", progress=False)


def test_the_first_notebook_scores_zero_unsolved_and_full_solved(tmp_path):
    """End to end on the course's notebook 00: the stubs score 0, the solutions (from the
    checkers' tests) score every point."""
    import inspect

    import test_checkers_00_03 as solutions

    from dma_ref.paths import REPO_ROOT
    (course_nb,) = sorted((REPO_ROOT / "notebooks").glob("00_*.ipynb"))
    nb = nbformat.read(course_nb, as_version=4)
    bodies = {"sliding_window_mask": solutions.sliding_window_ok, "kept_keys": solutions.kept_keys_ok}
    for cell in nb.cells:
        for name, fn in bodies.items():
            if cell.cell_type == "code" and f"def {name}(" in cell.source:
                body = inspect.getsource(fn).split("\n", 1)[1]
                cell.source = cell.source.replace(STUB.rstrip(), body.rstrip())
                assert "NotImplementedError" not in cell.source
    for student, notebook_ in (("unsolved", nbformat.read(course_nb, as_version=4)), ("solved", nb)):
        (tmp_path / "class" / student).mkdir(parents=True)
        nbformat.write(notebook_, tmp_path / "class" / student / course_nb.name)
    doc = grade.grade(tmp_path / "class", tmp_path / "out", timeout=300, progress=False)
    scores = {name: (s["points"], s["max_points"]) for name, s in doc["students"].items()}
    assert scores == {"solved": (3, 3), "unsolved": (0, 3)}, doc
