"""Converting a notebook written before the course existed: ``init`` starts its solved copy."""

from __future__ import annotations

from pathlib import Path

import nbformat

from .markers import (
    BEGIN,
    CODE_STUB,
    END,
    SOURCE_DIR,
    STUB,
    STUB_LINE,
    STUDENT_DIR,
    TODO,
    defines,
    exercises,
    render,
)


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
            if cell.cell_type == "code" and defines(cell.source, name):
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
