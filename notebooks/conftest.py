"""nbval: give the checked cells their expected outputs, kept beside the stripped notebooks.

Cells marked ``# NBVAL_CHECK_OUTPUT`` are compared by nbval with the outputs stored in the
notebook, and skipped when it stores none; the notebooks are committed stripped. Their expected
outputs live in ``checked_outputs.json`` (notebook name -> cell id -> outputs, written by
``python scripts/run_notebooks.py --store-checked``) and are put into nbval's cells here.
"""

from __future__ import annotations

import json
from pathlib import Path

import nbformat

CHECK_MARK = "# NBVAL_CHECK_OUTPUT"
EXPECTED = Path(__file__).with_name("checked_outputs.json")


def pytest_collection_modifyitems(items):
    expected = json.loads(EXPECTED.read_text())
    for item in items:
        cell = getattr(item, "cell", None)                  # nbval's IPyNbCell items only
        if cell is None or cell.get("cell_type") != "code" or CHECK_MARK not in cell.source:
            continue
        outputs = expected.get(Path(str(item.fspath)).name, {}).get(cell.get("id"))
        if outputs is not None:                             # tests/test_layout.py requires it
            cell.outputs = [nbformat.from_dict(_joined(o)) for o in outputs]
            cell.execution_count = 1


def _joined(output: dict) -> dict:
    """Multi-line strings as nbformat holds them in memory (the file splits them into lines)."""
    output = dict(output)
    if isinstance(output.get("text"), list):
        output["text"] = "".join(output["text"])
    if "data" in output:
        output["data"] = {k: "".join(v) if isinstance(v, list) else v
                          for k, v in output["data"].items()}
    return output
