"""Grade submitted notebooks: ``python -m dma_ref.grade PATH [--out DIR] [--timeout S]``.

PATH is one notebook, or a class folder holding one sub-folder per student (every ``.ipynb``
under it is graded) and/or notebooks directly (each one is a student, named by its file stem).
Every notebook is executed with nbclient in a fresh kernel on the CPU (``TRITON_INTERPRET=1``,
no GPU visible), a time limit per cell (a cell over it is interrupted), errors allowed (a cell
that raises does not stop the rest).

An exercise is a ``<alias>.check_<name>(<function>)`` call in the notebook, the alias bound by
``from dma_ref.check import nbNN [as alias]``; the exercises expected of a notebook are those of
the course's own copy of it (``--reference``, default the package's ``notebooks/``) plus those in
the submission, so deleting a checker cell scores 0 instead of shrinking the total.

The points do not come from the verdicts the notebook printed: after the student's last cell,
the grader itself runs every exercise's checker again in the same kernel (see
:mod:`dma_ref.check.audit`) on the notebook's function, with a seed it draws at that moment,
after reloading the checker modules from disk, and reads each verdict from a file whose random
name it chose after the student's code had run. A notebook that changed the library the checkers
rely on (a function of torch, numpy or dma_ref reassigned) or left a hook that runs its code
during grading (an IPython transformer or event callback, an import hook, a thread) scores 0.
An exercise's points are the checker's declared points if that verdict passed, else 0.

Writes ``grades.json`` (per student, notebook and exercise: points, max_points, passed, message;
totals) and ``grades.csv`` (one row per student and exercise) under ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import os
import re
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .paths import REPO_ROOT

IMPORT = re.compile(r"from\s+dma_ref\.check\s+import\s+(\w+)(?:\s+as\s+(\w+))?")
CALL = re.compile(r"\b(\w+)\.(check_\w+)\s*\(\s*([A-Za-z_]\w*)?")
CSV_FIELDS = ["student", "notebook", "exercise", "points", "max_points", "passed", "message"]
# Imported before the student's first cell (with the notebook's checker modules), so that the
# snapshot covers them.
PRELOAD = ("torch", "numpy", "triton", "triton.language", "dma_ref", "dma_ref.kernels",
           "dma_ref.check.core")
HIDDEN = "__dma_ref_grader"      # prefix of the names the grader's own cells bind (then delete)


@dataclass(frozen=True)
class Exercise:
    """One exercise a notebook must solve: ``dma_ref.check.<module>.<checker>(<argument>)``."""

    module: str                   # "nb08"
    checker: str                  # "check_crossover"
    points: int
    argument: str | None          # the name of the notebook's function the checker is given

    @property
    def id(self) -> str:
        return f"{self.module}.{self.checker}"


@dataclass
class ExerciseScore:
    """One exercise of one submission."""

    exercise: str                 # "<checker module>.<checker>", e.g. "nb02.check_row_mask"
    max_points: int
    points: int = 0
    passed: bool = False
    message: str = "the checker did not run"


@dataclass
class NotebookGrade:
    """One executed submission: its exercises, totals and the errors its cells raised."""

    student: str
    notebook: str
    exercises: list[ExerciseScore] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def points(self) -> int:
        return sum(e.points for e in self.exercises)

    @property
    def max_points(self) -> int:
        return sum(e.max_points for e in self.exercises)


def find_exercises(nb: nbformat.NotebookNode) -> list[Exercise]:
    """The exercises of ``nb`` in order of first call, from its code cells' checker calls."""
    aliases: dict[str, str] = {}
    found: dict[str, Exercise] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for module, alias in IMPORT.findall(cell.source):
            aliases[alias or module] = module
        for alias, name, argument in CALL.findall(cell.source):
            if alias not in aliases:
                continue
            checker = getattr(importlib.import_module(f"dma_ref.check.{aliases[alias]}"), name, None)
            points = getattr(checker, "points", None)
            if isinstance(points, int):
                module = checker.exercise_id.split(".")[0]
                found.setdefault(checker.exercise_id,
                                 Exercise(module, name, points, argument or None))
    return list(found.values())


def submissions(path: Path) -> list[tuple[str, Path]]:
    """``[(student, notebook path)]`` under ``path`` (a notebook or a class folder), sorted."""
    if path.is_file():
        if path.suffix != ".ipynb":
            raise ValueError(f"PATH must be a .ipynb notebook or a folder, got {path}")
        return [(path.stem, path)]
    if not path.is_dir():
        raise ValueError(f"PATH does not exist: {path}")
    found: list[tuple[str, Path]] = []
    for entry in sorted(path.iterdir()):
        if entry.is_dir() and not entry.name.startswith("."):
            found += [(entry.name, nb) for nb in sorted(entry.rglob("*.ipynb"))
                      if ".ipynb_checkpoints" not in nb.parts]
        elif entry.suffix == ".ipynb":
            found.append((entry.stem, entry))
    return found


def _hidden_run(client, source: str) -> str:
    """Execute the grader's own ``source`` in the kernel, outside the notebook's history (as a
    cell appended to the in-memory notebook for the call: nbclient stores outputs by index)."""
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)
    try:
        client.execute_cell(cell, len(client.nb.cells) - 1, store_history=False)
    finally:
        client.nb.cells.pop()
    return "; ".join(f"{out.get('ename')}: {out.get('evalue')}" for out in cell.get("outputs", [])
                     if out.get("output_type") == "error")


def _fresh_path() -> Path:
    """A file name nobody could have guessed before now, in a new private folder."""
    return Path(tempfile.mkdtemp(prefix="dma-ref-grade-")) / f"{secrets.token_hex(16)}.json"


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


def tampering(before: dict, after: dict) -> list[str]:
    """What the notebook changed in the watched library (see :mod:`dma_ref.check.audit`): names
    whose function or class was replaced by one defined in the notebook or taken from another
    package, or removed; ``torch.Tensor`` methods added from outside torch; hooks defined in the
    notebook's cells. (A library may rebind its own functions lazily: torch replaces some on
    first use, so a replacement from the same package is not counted.)"""
    def foreign(entry: str, home: str) -> bool:
        source = entry.split(":", 1)[1]
        return source == "__main__" or source != home

    pre, post = before["snapshot"], after["snapshot"]
    changed = [name for name, entry in pre.items()
               if name not in post or (post[name] != entry
                                       and foreign(post[name], entry.split(":", 1)[1]))]
    changed += [name for name, entry in post.items()
                if name not in pre and name.startswith("torch.Tensor.") and foreign(entry, "torch")]
    return sorted(set(changed)) + sorted(set(after["hooks"]) - set(before["hooks"]))


def execute(nb_path: Path, exercises: list[Exercise], timeout: int,
            kernel: str) -> tuple[list[str], list[ExerciseScore]]:
    """Run ``nb_path`` in a fresh kernel on the CPU, then check every exercise in that kernel
    with fresh seeds; return the errors its cells raised and the scores (the file itself is not
    changed)."""
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "DMA_REF_GRADE_LOG"}
    env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                            interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(nb_path.parent)}})
    scores = [ExerciseScore(e.id, e.points) for e in exercises]
    errors: list[str] = []
    client.reset_execution_trackers()
    try:
        with client.setup_kernel(env=env):
            first = _fresh_path()
            preload = PRELOAD + tuple(sorted({f"dma_ref.check.{e.module}" for e in exercises}))
            failed = _hidden_run(client, f"import importlib as {HIDDEN}\n"
                                 f"for {HIDDEN}_m in {preload!r}: {HIDDEN}.import_module({HIDDEN}_m)\n"
                                 f"{HIDDEN}.import_module('dma_ref.check.audit')"
                                 f".write_snapshot({str(first)!r})\ndel {HIDDEN}, {HIDDEN}_m")
            before = _read_json(first)
            if before is None:
                raise RuntimeError(f"the grader's snapshot did not run: {failed}")
            for index, cell in enumerate(nb.cells):
                client.execute_cell(cell, index, execution_count=client.code_cells_executed + 1)
            errors += _cell_errors(nb)
            scores = _grade_in_kernel(client, exercises, scores, before)
    except Exception as err:  # noqa: BLE001  (a dead kernel ends this notebook only)
        text = str(err).strip()
        errors += _cell_errors(nb)
        errors.append(f"{type(err).__name__}: {text.splitlines()[-1] if text else ''}")
    return errors, scores


def _cell_errors(nb: nbformat.NotebookNode) -> list[str]:
    return [f"cell {cell.get('id', '?')}: {out.get('ename')}: {out.get('evalue')}"
            for cell in nb.cells for out in cell.get("outputs", [])
            if out.get("output_type") == "error"]


def _grade_in_kernel(client, exercises: list[Exercise], scores: list[ExerciseScore],
                     before: dict) -> list[ExerciseScore]:
    """After the student's cells: snapshot again, refuse a tampered kernel, reload the checkers,
    then run each checker with a fresh seed, its verdict read from a fresh random file."""
    audit = f"{HIDDEN}_audit"
    after_path = _fresh_path()
    _hidden_run(client, f"import importlib as {HIDDEN}\n"
                f"{audit} = {HIDDEN}.reload({HIDDEN}.import_module('dma_ref.check.audit'))\n"
                f"{audit}.write_snapshot({str(after_path)!r})\n"
                f"{audit}.reload_checkers()\ndel {HIDDEN}")
    after = _read_json(after_path)
    if after is None:
        for s in scores:
            s.message = "the grader could not inspect the kernel after the notebook ran"
        return scores
    changed = tampering(before, after)
    if changed:
        shown = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        for s in scores:
            s.message = f"not graded: the notebook changed {shown}"
        return scores
    for ex, s in zip(exercises, scores):
        seed = secrets.randbelow(2**31 - 1)
        path = _fresh_path()
        _hidden_run(client, f"{audit}.recheck({ex.module!r}, {ex.checker!r}, {ex.argument!r}, "
                    f"{seed}, globals(), {str(path)!r})")
        verdict = _read_json(path)
        if verdict is None or verdict.get("exercise") != ex.id or verdict.get("seed") != seed:
            s.message = f"the checker did not finish (time limit or crash) [seed={seed}]"
            continue
        s.passed = verdict.get("passed") is True
        s.points = s.max_points if s.passed else 0
        s.message = f"{verdict.get('message', '')} [seed={seed}]"
    _hidden_run(client, f"del {audit}")
    return scores


def grade_notebook(student: str, nb_path: Path, reference: Path | None, timeout: int,
                   kernel: str) -> NotebookGrade:
    """Execute and score one submission."""
    mine = find_exercises(nbformat.read(nb_path, as_version=4))
    ref = reference / nb_path.name if reference is not None else None
    expected = {}
    if ref is not None and ref.is_file() and ref.resolve() != nb_path.resolve():
        expected = {e.id: e for e in find_exercises(nbformat.read(ref, as_version=4))}
    for e in mine:   # the submission's own call names the function it wants checked
        if e.argument or e.id not in expected:
            expected[e.id] = e
    errors, exercises = execute(nb_path, list(expected.values()), timeout, kernel)
    return NotebookGrade(student, nb_path.name, exercises, errors)


def write_reports(grades: list[NotebookGrade], out: Path) -> dict:
    """Write ``grades.json`` and ``grades.csv`` under ``out``; return the JSON document."""
    out.mkdir(parents=True, exist_ok=True)
    students: dict[str, dict] = {}
    for g in grades:
        s = students.setdefault(g.student, {"notebooks": {}, "points": 0, "max_points": 0})
        s["notebooks"][g.notebook] = {"exercises": [asdict(e) for e in g.exercises],
                                      "points": g.points, "max_points": g.max_points,
                                      "errors": g.errors}
        s["points"] += g.points
        s["max_points"] += g.max_points
    doc = {"students": students}
    (out / "grades.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for g in grades:
            for e in g.exercises:
                writer.writerow({"student": g.student, "notebook": g.notebook, **asdict(e)})
        for name, s in students.items():
            writer.writerow({"student": name, "notebook": "", "exercise": "TOTAL",
                             "points": s["points"], "max_points": s["max_points"],
                             "passed": s["points"] == s["max_points"], "message": ""})
    return doc


def grade(path: Path, out: Path, *, reference: Path | None = REPO_ROOT / "notebooks",
          timeout: int = 600, kernel: str = "python3", progress: bool = True) -> dict:
    """Grade every submission under ``path``; write the reports to ``out``; return the JSON."""
    subs = submissions(Path(path))
    if not subs:
        raise ValueError(f"no notebook found under {path}")
    items: Iterable[tuple[str, Path]] = subs
    if progress:
        from tqdm.auto import tqdm
        items = tqdm(subs, desc="grading", unit="notebook")
    grades = [grade_notebook(student, nb, reference, timeout, kernel) for student, nb in items]
    return write_reports(grades, Path(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dma_ref.grade", description=__doc__.split("\n")[0])
    parser.add_argument("path", type=Path, help="a notebook, or a folder of student folders/notebooks")
    parser.add_argument("--out", type=Path, default=Path("grades"), help="report folder (default ./grades)")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel name (default python3)")
    parser.add_argument("--reference", type=Path, default=REPO_ROOT / "notebooks",
                        help="the course's notebooks, to know every exercise a notebook has")
    args = parser.parse_args(argv)
    doc = grade(args.path, args.out, reference=args.reference, timeout=args.timeout,
                kernel=args.kernel)
    for name, s in doc["students"].items():
        print(f"{name}: {s['points']}/{s['max_points']} points")
    print(f"reports: {args.out / 'grades.json'}, {args.out / 'grades.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
