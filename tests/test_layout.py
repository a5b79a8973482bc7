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
