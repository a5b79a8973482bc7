"""The solved notebooks (course/source/) are the single source of the student notebooks
(notebooks/): generation is deterministic, the committed student copies are exactly what it
gives, every exercise of a solved notebook carries its solution between markers, and no student
copy holds solution code.

The last test grades both copies with the course's grader (``python -m dma_ref.grade``): the
solved notebooks score every point, the student notebooks 0. Grading executes notebooks, so it
grades what each copy needs (:func:`dma_ref.course.grade_check`'s default): the solved notebooks
*whole* (a solution must pass where it stands, and every cell after it must still run) and the
student notebooks' *exercise notebooks* (one cell of imports and helpers, then the exercise and
checker cells; nbval already runs the student notebooks whole in CI). The grader's reference is
the full student notebook, so an exercise missing from an exercise notebook still counts
against it. Measured on the 2-core CPU: about 2 minutes for the thirteen notebooks (the exercise
notebooks of both copies alone: about 1 minute). ``make grade-check``
also grades the student notebooks whole."""

from __future__ import annotations

import nbformat
import pytest

from dma_ref import course

SOURCES = course.source_notebooks()
IDS = [p.name[:2] for p in SOURCES]


def test_there_are_solved_notebooks():
    assert len(SOURCES) >= 10, [p.name for p in SOURCES]


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_the_student_notebook_is_what_generation_gives(source):
    text = course.generate(source)
    assert text == course.generate(source)                     # deterministic
    committed = (course.STUDENT_DIR / source.name).read_text(encoding="utf-8")
    assert committed == text, (f"notebooks/{source.name} differs from its generation: run "
                               "python -m dma_ref.course build")


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_every_exercise_has_a_marked_solution(source):
    assert course.problems(source) == []
    nb = nbformat.read(source, as_version=4)
    names = course.exercises(nb)
    assert names, f"{source.name} has no exercise"
    module = course.solutions(source.name[:2])
    assert all(callable(getattr(module, name, None)) for name in names), names


@pytest.mark.parametrize("source", SOURCES, ids=IDS)
def test_no_student_copy_holds_solution_code(source):
    solved = nbformat.read(source, as_version=4)
    student = {c.id: c for c in nbformat.read(course.STUDENT_DIR / source.name, as_version=4).cells}
    for cell in solved.cells:
        got = student[cell.id].source
        assert course.BEGIN not in got and course.END not in got and course.STUB not in got
        if not course.has_solution(cell.source):
            continue
        inside, solution = False, []
        for line in cell.source.split("\n"):
            text = line.strip()
            if text.startswith((course.BEGIN, course.END)):
                inside = text.startswith(course.BEGIN)
            elif inside and text and not text.startswith(course.STUB):
                solution.append(text)
        leaked = [line for line in solution if line in {t.strip() for t in got.split("\n")}]
        assert not leaked, (cell.id, leaked)
        # the default stub, a kernel's `pass`, or a region's own `### STUB: raise NotImplementedError`
        assert any(stub in got for stub in ("raise NotImplementedError", "pass",
                                            course.MARKDOWN_STUB)), cell.id


def test_strip_solutions_rules():
    solved = ("def f(x):\n"
              "    # a hint, kept\n"
              "    ### BEGIN SOLUTION\n"
              "    y = x + 1\n"
              "    return y\n"
              "    ### END SOLUTION\n"
              "\n"
              "@jit\n"
              "def k(p):\n"
              "    ### BEGIN SOLUTION\n"
              "    ### STUB: # your code here: one load\n"
              "    ### STUB: pass\n"
              "    tl.load(p)\n"
              "    ### END SOLUTION")
    assert course.strip_solutions(solved) == (
        "def f(x):\n    # a hint, kept\n    raise NotImplementedError  # your code here\n\n"
        "@jit\ndef k(p):\n    # your code here: one load\n    pass")
    assert course.strip_solutions("### BEGIN SOLUTION\nanswer\n### END SOLUTION",
                                  markdown=True) == course.MARKDOWN_STUB
    assert course.strip_solutions("no markers\n") == "no markers\n"
    for broken in ("### BEGIN SOLUTION\nx", "x\n### END SOLUTION",
                   "### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION"):
        with pytest.raises(course.MarkerError):
            course.strip_solutions(broken)


def test_init_then_generate_gives_back_the_student_notebook(tmp_path):
    """Converting a notebook starts from ``init``: until the solutions are pasted in, generation
    returns the student notebook unchanged, and ``problems`` lists every region left to fill."""
    for student in sorted(course.STUDENT_DIR.glob("[0-9][0-9]_*.ipynb")):
        dest = course.init(student.name[:2], dest_dir=tmp_path)
        assert course.generate(dest) == student.read_text(encoding="utf-8"), student.name
        todo = [p for p in course.problems(dest) if course.TODO in p]
        assert len(todo) == len(course.exercises(nbformat.read(student, as_version=4))), student.name
    with pytest.raises(FileExistsError):
        course.init("00", dest_dir=tmp_path)


def test_the_grader_gives_the_solved_notebooks_full_marks_and_the_students_zero(tmp_path):
    result = course.grade_check(folder=tmp_path, timeout=600)
    assert set(result) == {p.name for p in SOURCES}
    wrong = {name: r for name, r in result.items() if not (r[0] == r[2] > 0 and r[1] == 0)}
    assert not wrong, f"(solved, student, max) points: {wrong}"
