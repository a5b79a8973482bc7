"""The course's single source of truth: solved notebooks in, student notebooks out.

``course/source/NN_*.ipynb`` are the *solved* notebooks. Each exercise cell holds its solution
between two marker comments (the markers of nbgrader)::

    def row_mask(s, window):
        # bool [B, H, K, K]            <- outside the markers: in both copies
        ### BEGIN SOLUTION
        ...the solution...
        ### END SOLUTION

The student copy (``notebooks/NN_*.ipynb``, what the learners open and ``make notebooks`` runs)
is generated: every marked region becomes one line at the marker's indentation,
``raise NotImplementedError  # your code here``, unless the region holds its own stub as
``### STUB: <line>`` comments (Triton kernels need ``pass``: a compiled kernel cannot raise).
A markdown cell may mark a written answer the same way; it becomes ``*Your answer here.*``.
Outputs and execution counts are cleared; the bytes are a pure function of the source.

Command line (``python -m dma_ref.course``):

* ``build [NN ...]``   write the student notebooks of every (or the named) source notebook;
* ``check``            exit 1 if a committed student notebook differs from its generation, or a
                       source breaks the marker rules (the CI test does the same);
* ``init NN``          start the solved copy of ``notebooks/NN_*`` (a notebook not converted
                       yet): its stubs are wrapped in markers, to be replaced by the solutions;
* ``grade``            grade the solved copies (whole) and the student copies (their exercise
                       cells) with ``python -m dma_ref.grade``: full marks and zero, as CI does
                       (``--full``: the student copies whole too; ``--quick``: exercises only).

Tests reach a solution with :func:`solutions` (``solutions("02").row_mask``), so each solution
is written once, in its notebook.
"""

from __future__ import annotations

import argparse
import ast
import atexit
import copy
import functools
import importlib.util
import re
import shutil
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import nbformat

from .paths import REPO_ROOT

SOURCE_DIR = REPO_ROOT / "course" / "source"
STUDENT_DIR = REPO_ROOT / "notebooks"
BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
STUB = "### STUB:"
CODE_STUB = "raise NotImplementedError  # your code here"
MARKDOWN_STUB = "*Your answer here.*"
TODO = "TODO: the solution"          # what `init` leaves in a region; never in a finished source
# A checker call: `alias.check_name(function` (the grader's notion of an exercise).
CHECK_CALL = re.compile(r"\b(\w+)\.check_\w+\(\s*(\w+)")
CHECK_IMPORT = re.compile(r"from\s+dma_ref\.check\s+import\s+(\w+)(?:\s+as\s+(\w+))?")
# The stub lines `init` recognises in a student notebook.
STUB_LINE = re.compile(r"^(\s*)(raise NotImplementedError\b.*|pass)\s*$")


class MarkerError(ValueError):
    """A solved notebook breaks the marker rules (unclosed, nested or stray markers)."""


def strip_solutions(source: str, *, markdown: bool = False, where: str = "cell") -> str:
    """``source`` with every marked region replaced by its stub (see the module docstring)."""
    out: list[str] = []
    region: list[str] | None = None           # the stub lines of the open region
    indent = ""
    for n, line in enumerate(source.split("\n"), 1):
        text = line.strip()
        if text.startswith(BEGIN):
            if region is not None:
                raise MarkerError(f"{where}, line {n}: {BEGIN} inside a region")
            region, indent = [], line[: len(line) - len(line.lstrip())]
        elif text.startswith(END):
            if region is None:
                raise MarkerError(f"{where}, line {n}: {END} without {BEGIN}")
            if not region:
                region = [indent + (MARKDOWN_STUB if markdown else CODE_STUB)]
            out += region
            region = None
        elif region is not None:
            if text.startswith(STUB):
                stub = text[len(STUB):]
                stub = stub.removeprefix(" ")
                region.append(line[: len(line) - len(line.lstrip())] + stub)
        else:
            out.append(line)
    if region is not None:
        raise MarkerError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def has_solution(source: str) -> bool:
    """Whether a cell's source holds a marked solution region."""
    return any(line.strip().startswith(BEGIN) for line in source.split("\n"))


def student_notebook(solved: nbformat.NotebookNode, where: str = "notebook") -> nbformat.NotebookNode:
    """The student copy of a solved notebook: regions stubbed, outputs and counts cleared."""
    nb = copy.deepcopy(solved)
    for i, cell in enumerate(nb.cells):
        label = f"{where}, cell {i} ({cell.get('id', '?')})"
        cell.source = strip_solutions(cell.source, markdown=cell.cell_type == "markdown",
                                      where=label)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


def render(nb: nbformat.NotebookNode) -> str:
    """The bytes a notebook is committed as (nbformat's layout plus a final newline)."""
    return nbformat.writes(nb) + "\n"


def source_notebooks(names: list[str] | None = None) -> list[Path]:
    """The solved notebooks ``course/source/NN_*.ipynb``, optionally those whose name contains
    one of ``names`` (e.g. ``["02", "08"]``)."""
    paths = sorted(SOURCE_DIR.glob("[0-9][0-9]_*.ipynb"))
    return [p for p in paths if not names or any(n in p.name for n in names)]


def source_notebook(number: str) -> Path:
    """The solved notebook numbered ``number`` (``"02"``)."""
    found = sorted(SOURCE_DIR.glob(f"{number}_*.ipynb"))
    if len(found) != 1:
        raise FileNotFoundError(f"no single solved notebook {number}_*.ipynb in {SOURCE_DIR}")
    return found[0]


def generate(source: Path) -> str:
    """The student notebook's text generated from the solved notebook ``source``."""
    solved = nbformat.read(source, as_version=4)
    return render(student_notebook(solved, where=source.name))


def build(names: list[str] | None = None, out_dir: Path = STUDENT_DIR) -> list[Path]:
    """Write the student copy of every (or every named) solved notebook into ``out_dir``;
    return the paths whose content changed."""
    changed = []
    for src in source_notebooks(names):
        text, dest = generate(src), out_dir / src.name
        if not dest.exists() or dest.read_text(encoding="utf-8") != text:
            dest.write_text(text, encoding="utf-8")
            changed.append(dest)
    return changed


def exercises(nb: nbformat.NotebookNode) -> list[str]:
    """The names of the functions the notebook hands to a checker (``check_x(fn)``), in order."""
    aliases: set[str] = set()
    names: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        aliases |= {alias or module for module, alias in CHECK_IMPORT.findall(cell.source)}
        for alias, fn in CHECK_CALL.findall(cell.source):
            if alias in aliases and fn not in names:
                names.append(fn)
    return names


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(?:def|class)\s+{name}\b|^{name}\s*=", source, re.MULTILINE) is not None


def problems(source: Path) -> list[str]:
    """What is wrong with a solved notebook: marker errors, an exercise whose function is not
    defined in a marked cell, a region left as ``init`` made it, outputs committed."""
    nb = nbformat.read(source, as_version=4)
    found = []
    try:
        student_notebook(nb, where=source.name)
    except MarkerError as err:
        found.append(str(err))
    for name in exercises(nb):
        cells = [c for c in nb.cells if c.cell_type == "code" and _defines(c.source, name)]
        if not cells:
            found.append(f"{source.name}: the exercise {name} is defined in no cell")
        elif not any(has_solution(c.source) for c in cells):
            found.append(f"{source.name}: the exercise {name} has no {BEGIN} / {END} region")
    for i, cell in enumerate(nb.cells):
        if TODO in cell.source:
            found.append(f"{source.name}, cell {i}: a region still holds '{TODO}'")
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            found.append(f"{source.name}, cell {i}: outputs are committed (strip them)")
    return found


def stale(names: list[str] | None = None) -> list[str]:
    """The student notebooks that differ from their generation (or are missing)."""
    out = []
    for src in source_notebooks(names):
        dest = STUDENT_DIR / src.name
        if not dest.exists() or dest.read_text(encoding="utf-8") != generate(src):
            out.append(dest.name)
    return out


# ---------------------------------------------------------------------------------------------
# Solutions for the tests, and the exercise-only notebooks the grader runs in CI
# ---------------------------------------------------------------------------------------------

def _parse(source: str) -> ast.Module | None:
    """A code cell as Python (IPython magics and shell lines blanked), or None if it is not."""
    lines = ["" if line.lstrip().startswith(("%", "!")) else line for line in source.split("\n")]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _segments(source: str, keep: tuple[type, ...]) -> list[str]:
    """The top-level statements of ``source`` of the ``keep`` kinds, as source text
    (decorators included)."""
    tree = _parse(source)
    if tree is None:
        return []
    lines = source.split("\n")
    out = []
    for node in tree.body:
        if isinstance(node, keep):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            out.append("\n".join(lines[first - 1: node.end_lineno]))
    return out


IMPORTS = (ast.Import, ast.ImportFrom)
DEFINITIONS = IMPORTS + (ast.FunctionDef, ast.ClassDef)


def imports_of(nb: nbformat.NotebookNode) -> str:
    """Every top-level import of the notebook's code cells, in order, duplicates dropped."""
    seen: list[str] = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            seen += [s for s in _segments(cell.source, IMPORTS) if s not in seen]
    return "\n".join(seen)


SUPPORT = (ast.FunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def _bound(node: ast.AST) -> set[str]:
    """The module-level names a top-level definition or assignment binds."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _free(node: ast.AST) -> set[str]:
    """The names a top-level statement reads from the module (a function's arguments and locals
    left out)."""
    names = [n for n in ast.walk(node) if isinstance(n, ast.Name)]
    loads = {n.id for n in names if isinstance(n.ctx, ast.Load)}
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return loads
    local = {n.id for n in names if not isinstance(n.ctx, ast.Load)}
    return loads - local - {a.arg for a in ast.walk(node) if isinstance(a, ast.arg)}


def support_code(nb: nbformat.NotebookNode) -> list[str]:
    """The definitions and assignments of other cells that the exercises' definitions read, and
    what those read in turn, in notebook order (the latest binding before the exercise): e.g. the
    ``DOT_PRECISION`` and jitted helpers a Triton solution calls. Without them, a solution loaded
    by :func:`solutions` or run in an exercise notebook would meet a NameError."""
    latest: dict[str, tuple[int, str, ast.AST]] = {}   # name -> (order, source, statement)
    kept: dict[int, str] = {}
    order = 0
    for cell in nb.cells:
        tree = _parse(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        if has_solution(cell.source):
            todo = [n for node in tree.body if isinstance(node, DEFINITIONS) for n in _free(node)]
            while todo:
                found = latest.get(todo.pop())
                if found is not None and found[0] not in kept:
                    kept[found[0]] = found[1]
                    todo += _free(found[2])
            continue
        for node in (n for n in tree.body if isinstance(n, SUPPORT)):
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            order += 1
            for name in _bound(node):
                latest[name] = (order, "\n".join(cell.source.split("\n")[first - 1: node.end_lineno]),
                                node)
    return [kept[k] for k in sorted(kept)]


def solution_code(source: Path) -> str:
    """A Python module made of the solved notebook's imports, the helpers its solutions read
    (:func:`support_code`) and the definitions of its exercise cells (the cells with a marked
    region), in notebook order; calls and prints are left out."""
    nb = nbformat.read(source, as_version=4)
    parts = [f'"""The solutions of {source.name}, extracted by dma_ref.course."""',
             imports_of(nb), *support_code(nb)]
    for cell in nb.cells:
        if cell.cell_type == "code" and has_solution(cell.source):
            parts += _segments(cell.source, DEFINITIONS)
    return "\n\n\n".join(parts) + "\n"


@functools.cache
def _load(source: Path, mtime: float) -> ModuleType:
    # A real file, not exec of a string: @triton.jit reads its function's source with inspect.
    folder = Path(tempfile.mkdtemp(prefix="dma_course_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    name = f"solutions_{source.stem[:2]}"
    path = folder / f"{name}.py"
    path.write_text(solution_code(source), encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def solutions(number: str) -> ModuleType:
    """The solved notebook ``number`` (``"02"``) as a module: ``solutions("02").row_mask``.

    Loaded once per process (again if the notebook changes)."""
    source = source_notebook(number)
    return _load(source, source.stat().st_mtime)


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
    from . import grade

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


# ---------------------------------------------------------------------------------------------
# Converting a notebook
# ---------------------------------------------------------------------------------------------

def init(number: str, dest_dir: Path = SOURCE_DIR) -> Path:
    """Start ``course/source/NN_*.ipynb`` from the student notebook ``notebooks/NN_*.ipynb``:
    in each cell defining an exercise, the stub line (``raise NotImplementedError`` or ``pass``)
    is wrapped in markers, with ``TODO`` in place of the solution. Refuses to overwrite."""
    (student,) = sorted(STUDENT_DIR.glob(f"{number}_*.ipynb")) or [None]
    if student is None:
        raise FileNotFoundError(f"no notebooks/{number}_*.ipynb")
    dest = Path(dest_dir) / student.name
    if dest.exists():
        raise FileExistsError(f"{dest} exists already")
    nb = nbformat.read(student, as_version=4)
    for name in exercises(nb):
        for cell in nb.cells:
            if cell.cell_type == "code" and _defines(cell.source, name):
                cell.source = _wrap_stub(cell.source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(render(nb), encoding="utf-8")
    return dest


def _wrap_stub(source: str) -> str:
    out = []
    for line in source.split("\n"):
        match = STUB_LINE.match(line)
        if match is None:
            out.append(line)
            continue
        indent, stub = match.groups()
        region = [indent + BEGIN]
        if stub != CODE_STUB:
            region.append(f"{indent}{STUB} {stub}")
        region += [f"{indent}raise NotImplementedError  # {TODO}", indent + END]
        out += region
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dma_ref.course",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write notebooks/ from course/source/")
    b.add_argument("names", nargs="*", help="only notebooks whose name contains one of these")
    sub.add_parser("check", help="fail if notebooks/ is out of date or a source is malformed")
    i = sub.add_parser("init", help="start the solved copy of a notebook not converted yet")
    i.add_argument("number", help="the notebook's number, e.g. 06")
    g = sub.add_parser("grade", help="grade the solved (full marks) and student (0) copies")
    g.add_argument("names", nargs="*")
    g.add_argument("--full", action="store_true", help="the student notebooks whole too")
    g.add_argument("--quick", action="store_true", help="the exercise notebooks only, both copies")
    args = parser.parse_args(argv)

    if args.command == "build":
        changed = build(args.names or None)
        print(f"{len(changed)} student notebook(s) written" +
              "".join(f"\n  {p.relative_to(REPO_ROOT)}" for p in changed))
        return 0
    if args.command == "check":
        bad = [p for src in source_notebooks() for p in problems(src)]
        bad += [f"notebooks/{name} differs from its generation: run python -m dma_ref.course build"
                for name in stale()]
        print("\n".join(bad) if bad else f"{len(source_notebooks())} solved notebooks, all in sync")
        return 1 if bad else 0
    if args.command == "init":
        dest = init(args.number)
        print(f"wrote {dest.relative_to(REPO_ROOT)}: put each solution in place of '{TODO}'")
        return 0
    result = grade_check(args.names or None, solved="exercises" if args.quick else "full",
                         student="full" if args.full else "exercises")
    ok = True
    for name, (solved, student, total) in result.items():
        flag = "ok" if solved == total and student == 0 else "WRONG"
        ok &= flag == "ok"
        print(f"{name}: solved {solved}/{total}, student {student}/{total}  {flag}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
