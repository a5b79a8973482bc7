"""The repository layout of DESIGN.md section 1 and the notebook conventions of section 7."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_NAME = re.compile(r"^(\d\d)_[a-z0-9]+(_[a-z0-9]+)*\.ipynb$")
CHECK_MARK = "# NBVAL_CHECK_OUTPUT"     # nbval compares these cells with their stored outputs


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("folder", ["notebooks", "dma_ref", "kernels", "figures", "tests"])
def test_top_level_folders_exist(folder):
    assert (ROOT / folder).is_dir(), f"{folder}/ is missing (DESIGN.md section 1)"


@pytest.mark.parametrize("name", ["environment.yml", "pyproject.toml", "README.md", "DESIGN.md",
                                  ".ci/run", "Makefile", "scripts/run_notebooks.py"])
def test_top_level_files_exist(name):
    assert (ROOT / name).is_file(), f"{name} is missing"


def test_design_references_name_existing_sections():
    """Notebooks, code and notes cite "DESIGN.md section 3.5" or "DESIGN.md §6": the file ships
    with the repository and every cited section exists in it."""
    headings = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", (ROOT / "DESIGN.md").read_text(), re.MULTILINE))
    cite = re.compile(r"DESIGN\.md,? (?:section|§) ?(\d+(?:\.\d+)?)")
    files = [*ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("dma_ref/**/*.py"), *ROOT.glob("kernels/*.py"),
             *ROOT.glob("tests/**/*.py"), *ROOT.glob("figures/**/*.md"), ROOT / "README.md"]
    cited = {(f.name, n) for f in files for n in cite.findall(f.read_text())}
    assert cited, "no citation found: the pattern is broken"
    missing = sorted((name, n) for name, n in cited if n not in headings)
    assert not missing, f"citations of sections DESIGN.md does not have: {missing}"


def test_ci_script_is_executable_bash_that_runs_make_test():
    run = ROOT / ".ci" / "run"
    assert os.access(run, os.X_OK)
    text = run.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "set -euo pipefail" in text
    assert re.search(r"^make test\b", text, re.MULTILINE)


def test_kernels_folder_is_the_package_dma_ref_kernels():
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    assert mapping["dma_ref.kernels"] == "kernels"
    # find_spec imports dma_ref but does not execute kernels/__init__.py (no Triton kernels).
    spec = importlib.util.find_spec("dma_ref.kernels")
    assert spec is not None and Path(spec.origin).resolve() == (ROOT / "kernels" / "__init__.py").resolve()


def test_executed_notebooks_are_git_ignored():
    ignored = (ROOT / ".gitignore").read_text().split()
    assert "/executed/" in ignored or "executed/" in ignored


def test_notebooks_are_numbered_in_sequence():
    paths = notebooks()
    assert paths, "notebooks/ holds no notebook"
    for p in paths:
        assert NOTEBOOK_NAME.match(p.name), f"{p.name} is not named NN_lower_case_name.ipynb"
    numbers = [int(NOTEBOOK_NAME.match(p.name).group(1)) for p in paths]
    assert numbers == list(range(len(numbers))), f"numbers must run 00, 01, ... without gaps: {numbers}"


@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    nb = json.loads(path.read_text())
    for index, cell in enumerate(nb["cells"]):
        where = f"{path.name} cell {index}"
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{where} has stored outputs: strip them"
            assert cell.get("execution_count") is None, f"{where} has an execution count"
        else:
            # Figures come from package code into figures/, never base64 inside markdown.
            assert "attachments" not in cell or not cell["attachments"], f"{where} has attachments"
            assert "data:image" not in "".join(cell["source"]), f"{where} embeds a base64 image"


def test_every_checked_cell_has_its_expected_output():
    """nbval skips a checked cell with no expected output: each must have one, text only, and
    notebooks/checked_outputs.json holds nothing else (no entry for a cell that is gone)."""
    expected = json.loads((ROOT / "notebooks/checked_outputs.json").read_text())
    wanted = {}
    for path in notebooks():
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code" and CHECK_MARK in "".join(cell["source"]):
                wanted.setdefault(path.name, set()).add(cell["id"])
    assert {name: set(cells) for name, cells in expected.items() if cells} == wanted
    for name, cells in expected.items():
        for cell_id, outputs in cells.items():
            assert outputs, f"{name} {cell_id}: no expected output"
            for o in outputs:
                assert o["output_type"] in ("stream", "execute_result"), f"{name} {cell_id}"
                assert set(o.get("data", {})) <= {"text/plain"}, f"{name} {cell_id}"


def test_store_checked_outputs_keeps_only_the_checked_cells(tmp_path):
    import nbformat

    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts/run_notebooks.py")
    run_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_notebooks)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell(f"{CHECK_MARK}\nprint(1)"),
        nbformat.v4.new_code_cell("print(2)"),
    ])
    for cell, text in ((nb.cells[1], "1\n"), (nb.cells[2], "2\n")):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
    store = tmp_path / "checked_outputs.json"
    store.write_text(json.dumps({"01_other.ipynb": {"c": []}}))
    assert run_notebooks.store_checked_outputs("00_x.ipynb", nb, store) == 1
    assert json.loads(store.read_text()) == {
        "00_x.ipynb": {nb.cells[1].id: [{"name": "stdout", "output_type": "stream",
                                          "text": ["1\n"]}]},
        "01_other.ipynb": {"c": []},
    }


# ------------------------------------------------------------------- module boundaries

PACKAGE_DIRS = ("dma_ref", "kernels")
SOURCE_DIRS = (*PACKAGE_DIRS, "scripts")
MAX_LINES = 400


def python_files(dirs) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def module_name(path: Path) -> str:
    """The dotted name a file is imported under (kernels/ is dma_ref.kernels)."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[0] == "kernels":
        parts = ["dma_ref", *parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def absolute(module: str | None, level: int, path: Path) -> str:
    if not level:
        return module or ""
    base = module_name(path).split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, *([module] if module else [])])


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_uses(path: Path, text: str | None = None) -> list[str]:
    """``from <project module> import _x``, a project module path with a ``_segment``, and
    ``alias._x`` where alias names a project module."""
    import ast

    tree = ast.parse(path.read_text() if text is None else text)
    found, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = absolute(node.module, node.level, path)
            if mod.split(".")[0] != "dma_ref":
                continue
            if any(private(seg) for seg in mod.split(".")):
                found.append(f"line {node.lineno}: from {mod} import ...")
            for a in node.names:
                if private(a.name):
                    found.append(f"line {node.lineno}: from {mod} import {a.name}")
                aliases.add(a.asname or a.name)          # may be a module: checked below
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "dma_ref":
                    if any(private(seg) for seg in a.name.split(".")):
                        found.append(f"line {node.lineno}: import {a.name}")
                    aliases.add(a.asname or a.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and private(node.attr)
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"line {node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_private_name_scan_catches_each_form():
    """The scan below must see all three forms (a scan that finds nothing proves nothing)."""
    text = ("from dma_ref.kernels.launch import _x\nfrom ._core import y\nimport numpy as np\n"
            "from dma_ref.kernels import op as ag\nag._impl()\nnp._private\nfrom . import core\n")
    found = private_uses(ROOT / "dma_ref" / "check" / "probe.py", text)
    assert [f.split(":")[0] for f in found] == ["line 1", "line 2", "line 5"], found


@pytest.mark.parametrize("path", python_files(SOURCE_DIRS), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_private_names(path):
    """What another module needs gets a public name; ``_names`` stay inside their module."""
    found = private_uses(path)
    assert not found, f"{path.relative_to(ROOT)} uses private names of other modules: {found}"


@pytest.mark.parametrize("path", python_files(PACKAGE_DIRS), ids=lambda p: str(p.relative_to(ROOT)))
def test_package_files_stay_small(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (> {MAX_LINES}): split it by job"


def test_pyproject_lists_every_package():
    """A wheel (not only an editable install) must carry every subpackage."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(p) for d in PACKAGE_DIRS for p in (ROOT / d).rglob("__init__.py")}
    assert listed == found, f"pyproject lists {sorted(listed)}, the folders are {sorted(found)}"
