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


@pytest.mark.parametrize("name", ["environment.yml", "pyproject.toml", "README.md", ".ci/run",
                                  "Makefile", "scripts/run_notebooks.py"])
def test_top_level_files_exist(name):
    assert (ROOT / name).is_file(), f"{name} is missing"


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
        if cell["cell_type"] == "code" and CHECK_MARK in "".join(cell["source"]):
            # nbval compares a checked cell with its stored outputs and skips it when it has
            # none: a checked cell must carry them (scripts/run_notebooks.py --store-checked),
            # as text only.
            assert cell.get("outputs"), f"{where} is checked but stores no output to compare"
            assert cell.get("execution_count") is not None, f"{where}: stored but never run"
            kinds = {o["output_type"] for o in cell["outputs"]}
            assert kinds <= {"stream", "execute_result"}, f"{where} stores {kinds}"
            for o in cell["outputs"]:
                assert set(o.get("data", {})) <= {"text/plain"}, f"{where} stores non-text data"
        elif cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{where} has stored outputs: strip them"
            assert cell.get("execution_count") is None, f"{where} has an execution count"
        else:
            # Figures come from package code into figures/, never base64 inside markdown.
            assert "attachments" not in cell or not cell["attachments"], f"{where} has attachments"
            assert "data:image" not in "".join(cell["source"]), f"{where} embeds a base64 image"


def test_store_checked_outputs_writes_only_the_checked_cells(tmp_path):
    import nbformat

    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts/run_notebooks.py")
    run_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run_notebooks)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# title"),
        nbformat.v4.new_code_cell(f"{CHECK_MARK}\nprint(1)"),
        nbformat.v4.new_code_cell("print(2)"),
    ])
    path = tmp_path / "00_x.ipynb"
    nbformat.write(nb, path)
    executed = nbformat.read(path, as_version=4)
    for cell, text in ((executed.cells[1], "1\n"), (executed.cells[2], "2\n")):
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        cell.execution_count = 7
    assert run_notebooks.store_checked_outputs(path, executed) == 1
    cells = json.loads(path.read_text())["cells"]
    assert cells[1]["outputs"] == [{"name": "stdout", "output_type": "stream", "text": ["1\n"]}]
    assert cells[1]["execution_count"] == 1
    assert cells[2]["outputs"] == [] and cells[2]["execution_count"] is None
