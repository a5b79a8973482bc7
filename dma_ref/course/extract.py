"""The solutions of a solved notebook as an importable module (``solutions("02").row_mask``),
with the imports and helpers they read."""

from __future__ import annotations

import ast
import atexit
import functools
import importlib.util
import shutil
import tempfile
from pathlib import Path
from types import ModuleType

import nbformat

from .markers import has_solution, source_notebook


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
