"""Grading both copies of the course: the solved notebooks must earn full marks, the student
notebooks zero (what CI and ``make grade-check`` run)."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import nbformat

from .extract import imports_of, support_code
from .markers import CHECK_CALL, STUDENT_DIR, has_solution, source_notebooks, student_notebook


def _is_exercise_cell(cell) -> bool:
    return cell.cell_type == "code" and (has_solution(cell.source) or CHECK_CALL.search(cell.source)
                                         is not None)


def _keep(nb: nbformat.NotebookNode, ids: set) -> nbformat.NotebookNode:
    out = copy.deepcopy(nb)
    header = nbformat.v4.new_code_cell("\n\n\n".join([imports_of(nb), *support_code(nb)]),
                                       id="course-imports")
    out.cells = [header] + [c for c in out.cells if c.get("id") in ids]
    for cell in out.cells:
        cell.outputs, cell.execution_count = [], None
    return out


def exercise_pair(source: Path) -> tuple[nbformat.NotebookNode, nbformat.NotebookNode]:
    """(solved, student) *exercise notebooks* of one solved notebook: one cell of all the
    notebook's imports, then its exercise cells (a marked region) and checker calls in order;
    the student's generated from the solved one. What CI grades: seconds to run, where the
    whole notebook takes a minute of figures and training."""
    solved = nbformat.read(source, as_version=4)
    ids = {c.get("id") for c in solved.cells if _is_exercise_cell(c)}
    return _keep(solved, ids), student_notebook(_keep(solved, ids), where=source.name)


def grade_check(names: list[str] | None = None, *, solved: str = "full",
                student: str = "exercises", timeout: int = 600,
                folder: Path | None = None) -> dict[str, tuple[int, int, int]]:
    """Grade the solved and the student copies with :mod:`dma_ref.grade`; return
    ``{notebook: (solved points, student points, max points)}``.

    ``solved`` and ``student`` say what is graded of each copy: ``"full"``, the whole notebook
    (``course/source/`` and ``notebooks/``), or ``"exercises"``, its exercise notebook
    (:func:`exercise_pair`). The default is what CI runs: the solved notebooks whole (their
    solutions must pass where they stand, and every later cell must still run) and the student
    notebooks' exercises (nbval runs the student notebooks whole anyway).
    """
    from .. import grade

    for kind in (solved, student):
        if kind not in ("full", "exercises"):
            raise ValueError(f"solved and student are 'full' or 'exercises', got {kind!r}")
    folder = Path(folder or tempfile.mkdtemp(prefix="dma_grade_"))
    for src in source_notebooks(names):
        pair = exercise_pair(src)
        whole = (nbformat.read(src, as_version=4),
                 nbformat.read(STUDENT_DIR / src.name, as_version=4))
        for i, (who, kind) in enumerate((("solved", solved), ("student", student))):
            (folder / "class" / who).mkdir(parents=True, exist_ok=True)
            nbformat.write(whole[i] if kind == "full" else pair[i], folder / "class" / who / src.name)
    doc = grade.grade(folder / "class", folder / "grades", reference=STUDENT_DIR,
                      timeout=timeout, progress=False)
    result = {}
    for src in source_notebooks(names):
        got = [doc["students"][who]["notebooks"][src.name] for who in ("solved", "student")]
        result[src.name] = (got[0]["points"], got[1]["points"], got[0]["max_points"])
    return result
