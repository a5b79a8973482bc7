"""Solved notebook in, student notebook out: the solution markers, the stubs, and building or
checking ``notebooks/`` from ``course/source/`` (the rules are in the package docstring)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import nbformat

from ..paths import REPO_ROOT

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


def defines(source: str, name: str) -> bool:
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
        cells = [c for c in nb.cells if c.cell_type == "code" and defines(c.source, name)]
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
