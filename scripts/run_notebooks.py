"""Execute the notebook series in order and report how long each notebook took.

    python scripts/run_notebooks.py            # every notebooks/NN_*.ipynb
    python scripts/run_notebooks.py 03 mask    # only names containing "03" or "mask"
    python scripts/run_notebooks.py --store-checked   # also refresh the checked cells' outputs

Each notebook runs in a fresh kernel of *this* Python (the venv), with the notebooks/ folder
as its working directory, exactly as a reader would run it in Jupyter. The executed copy goes
to executed/ (git-ignored); the notebooks save their figures under figures/ through package
functions, so a full run regenerates figures/. Runs on the CPU unless --gpu is given. Exits
non-zero when any notebook fails (all notebooks are still attempted, so one run shows every
failure).

Cells marked ``# NBVAL_CHECK_OUTPUT`` are compared by nbval with expected outputs kept in
``notebooks/checked_outputs.json`` (``notebooks/conftest.py`` hands them to nbval; the notebooks
stay stripped). ``--store-checked`` rewrites that file from this run; review its diff.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import nbformat
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "executed"
CHECKED_OUTPUTS = NOTEBOOKS / "checked_outputs.json"


class CurrentEnvKernelManager(KernelManager):
    """Start the kernel with this interpreter, whatever "python3" kernelspec is installed."""

    def format_kernel_cmd(self, extra_arguments=None):
        return [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]


def find_notebooks(filters: list[str]) -> list[Path]:
    """The numbered notebooks ``NN_name.ipynb`` in order, optionally filtered by substring."""
    paths = sorted(p for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    if filters:
        paths = [p for p in paths if any(f in p.name for f in filters)]
    return paths


CHECK_MARK = "# NBVAL_CHECK_OUTPUT"


def is_checked(source) -> bool:
    """Whether a code cell's source (str or list of lines) carries the nbval check marker."""
    return CHECK_MARK in ("".join(source) if isinstance(source, list) else source)


def checked_outputs(executed: nbformat.NotebookNode) -> dict[str, list]:
    """``{cell id: outputs}`` of the checked cells of an executed notebook (text lines split as
    Jupyter writes them)."""
    found = {}
    for cell in executed.cells:
        if cell.cell_type != "code" or not is_checked(cell.source):
            continue
        outputs = []
        for out in cell.outputs:
            out = json.loads(json.dumps(out, sort_keys=True))    # NotebookNode -> dict
            if isinstance(out.get("text"), str):
                out["text"] = out["text"].splitlines(keepends=True)
            for key, value in out.get("data", {}).items():
                if isinstance(value, str):
                    out["data"][key] = value.splitlines(keepends=True)
            outputs.append(out)
        found[cell.id] = outputs
    return found


def store_checked_outputs(name: str, executed: nbformat.NotebookNode,
                          store: Path = CHECKED_OUTPUTS) -> int:
    """Write the checked cells' outputs of notebook ``name`` into ``store``; return their count."""
    expected = json.loads(store.read_text()) if store.exists() else {}
    expected[name] = checked_outputs(executed)
    store.write_text(json.dumps(expected, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    return len(expected[name])


def run_one(path: Path, timeout: int, store_checked: bool = False) -> tuple[bool, int, str]:
    """Execute one notebook; write the executed copy (and, with ``store_checked`` and no error,
    the checked cells' outputs into CHECKED_OUTPUTS); return ``(ok, n_code_cells, error)``."""
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            kernel_manager_class=CurrentEnvKernelManager,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    ok, error = True, ""
    try:
        client.execute()
    except CellExecutionError as err:
        ok, error = False, str(err)
    except Exception as err:  # noqa: BLE001 - a dead kernel or a timeout: report it, write the copy
        ok, error = False, f"{type(err).__name__}: {err}"
    EXECUTED.mkdir(exist_ok=True)
    nbformat.write(nb, EXECUTED / path.name)
    if store_checked and ok:
        store_checked_outputs(path.name, nb)
    n_code = sum(cell.cell_type == "code" for cell in nb.cells)
    return ok, n_code, error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("filters", nargs="*", help="run only notebooks whose name contains one of these")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    parser.add_argument("--gpu", action="store_true", help="let the notebooks see CUDA devices")
    parser.add_argument("--store-checked", action="store_true",
                        help="rewrite notebooks/checked_outputs.json from this run")
    args = parser.parse_args(argv)
    if not args.gpu:
        # Hide GPUs from the kernels (they inherit this environment): CPU + Triton interpreter.
        os.environ["CUDA_VISIBLE_DEVICES"] = ""

    paths = find_notebooks(args.filters)
    if not paths:
        print(f"no notebook in {NOTEBOOKS} matches {args.filters or 'NN_*.ipynb'}", file=sys.stderr)
        return 1

    rows, failures = [], []
    bar = tqdm(paths, unit="nb")
    for path in bar:
        bar.set_description(path.stem)
        start = time.perf_counter()
        ok, n_code, error = run_one(path, args.timeout, args.store_checked and not args.gpu)
        rows.append((path.name, "ok" if ok else "FAILED", n_code, time.perf_counter() - start))
        if not ok:
            failures.append((path.name, error))
            tqdm.write(f"FAILED {path.name}:\n{error[-3000:]}")
    bar.close()

    width = max(len(name) for name, *_ in rows)
    print(f"\n{'notebook':<{width}}  {'status':<6}  {'cells':>5}  {'seconds':>8}")
    for name, status, n_code, seconds in rows:
        print(f"{name:<{width}}  {status:<6}  {n_code:>5}  {seconds:>8.1f}")
    total = sum(r[3] for r in rows)
    print(f"{'total':<{width}}  {len(rows) - len(failures)}/{len(rows)} ok  {'':>5}{total:>8.1f}")
    print(f"executed copies in {EXECUTED.relative_to(ROOT)}/, figures in figures/")
    if failures:
        print(f"{len(failures)} notebook(s) failed: {', '.join(name for name, _ in failures)}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
