"""Grade submitted notebooks: ``python -m dma_ref.grade PATH [--out DIR] [--timeout S]``.

PATH is one notebook, or a class folder holding one sub-folder per student (every ``.ipynb``
under it is graded) and/or notebooks directly (each one is a student, named by its file stem).
Every notebook is executed with nbclient in a fresh kernel on the CPU (``TRITON_INTERPRET=1``,
no GPU visible), a time limit per cell, errors allowed (a cell that raises does not stop the
rest). The checkers record their verdicts to a JSON-lines file the grader names in
``$DMA_REF_GRADE_LOG`` (see :mod:`dma_ref.check.core`).

An exercise is a ``<alias>.check_<name>(`` call in the notebook, the alias bound by
``from dma_ref.check import nbNN [as alias]``; the exercises expected of a notebook are those of
the course's own copy of it (``--reference``, default the package's ``notebooks/``) plus those in
the submission, so deleting a checker cell scores 0 instead of shrinking the total. An
exercise's points are the checker's declared points if its last verdict passed, else 0.

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
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat

from .check.core import GRADE_LOG_ENV
from .paths import REPO_ROOT

IMPORT = re.compile(r"from\s+dma_ref\.check\s+import\s+(\w+)(?:\s+as\s+(\w+))?")
CALL = re.compile(r"\b(\w+)\.(check_\w+)\s*\(")
CSV_FIELDS = ["student", "notebook", "exercise", "points", "max_points", "passed", "message"]


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


def find_exercises(nb: nbformat.NotebookNode) -> list[tuple[str, int]]:
    """``[(exercise id, max points)]`` in order of first call, from the code cells of ``nb``."""
    aliases: dict[str, str] = {}
    found: dict[str, int] = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for module, alias in IMPORT.findall(cell.source):
            aliases[alias or module] = module
        for alias, name in CALL.findall(cell.source):
            if alias not in aliases:
                continue
            checker = getattr(importlib.import_module(f"dma_ref.check.{aliases[alias]}"), name, None)
            points = getattr(checker, "points", None)
            if isinstance(points, int):
                found.setdefault(checker.exercise_id, points)
    return list(found.items())


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


def execute(nb_path: Path, log_path: Path, timeout: int, kernel: str) -> list[str]:
    """Run ``nb_path`` in a fresh kernel on the CPU, verdicts to ``log_path``; return the errors
    raised by its cells (the notebook file itself is not changed)."""
    from nbclient import NotebookClient

    nb = nbformat.read(nb_path, as_version=4)
    env = dict(os.environ, TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="",
               **{GRADE_LOG_ENV: str(log_path)})
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel, allow_errors=True,
                            resources={"metadata": {"path": str(nb_path.parent)}})
    errors: list[str] = []
    try:
        client.execute(env=env)
    except Exception as err:  # noqa: BLE001  (a timeout or a dead kernel ends this notebook only)
        errors.append(f"{type(err).__name__}: {str(err).strip().splitlines()[-1] if str(err).strip() else ''}")
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                errors.append(f"cell {cell.get('id', '?')}: {out.get('ename')}: {out.get('evalue')}")
    return errors


def score(expected: Iterable[tuple[str, int]], log_path: Path) -> list[ExerciseScore]:
    """Score ``expected`` exercises from the verdicts in ``log_path`` (the last one counts);
    points never exceed what the checker declares."""
    scores = {ex: ExerciseScore(ex, pts) for ex, pts in expected}
    lines = log_path.read_text(encoding="utf-8").splitlines() if log_path.exists() else []
    for line in lines:
        try:
            verdict = json.loads(line)
        except json.JSONDecodeError:
            continue
        entry = scores.get(verdict.get("exercise"))
        if entry is None:
            continue
        entry.passed = verdict.get("passed") is True
        entry.points = entry.max_points if entry.passed else 0
        entry.message = str(verdict.get("message", ""))
    return list(scores.values())


def grade_notebook(student: str, nb_path: Path, reference: Path | None, timeout: int,
                   kernel: str) -> NotebookGrade:
    """Execute and score one submission."""
    expected = find_exercises(nbformat.read(nb_path, as_version=4))
    ref = reference / nb_path.name if reference is not None else None
    if ref is not None and ref.is_file() and ref.resolve() != nb_path.resolve():
        expected = find_exercises(nbformat.read(ref, as_version=4)) + expected
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "verdicts.jsonl"
        errors = execute(nb_path, log_path, timeout, kernel)
        exercises = score(dict(expected).items(), log_path)
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
