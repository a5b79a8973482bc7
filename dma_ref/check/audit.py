"""What the grader runs inside a submission's kernel, around the student's cells.

``python -m dma_ref.grade`` does not trust anything the student's code could have written or
changed. Before the first cell it records :func:`snapshot` (the identity of every function and
class of the library modules the checkers rely on); after the last cell it reloads this module,
records the snapshot again plus :func:`foreign_hooks` (IPython transformers, event callbacks,
import hooks, threads, tracers defined in the notebook), reloads the checker modules
(:func:`reload_checkers`: a patched checker or ``run_checks`` is undone) and calls
:func:`recheck` on each exercise with a seed drawn by the grader at that moment. Every result goes
to a file whose random name the grader chose after the student's code had run.

This raises the bar; it is no sandbox. Code running in the same process can in principle defeat
any check made in that process (see ``course/instructor_notes.md``).
"""

from __future__ import annotations

import builtins
import contextlib
import importlib
import io
import json
import sys
import threading
import types
from collections.abc import Mapping

# Modules whose functions and classes the checkers call to compute their references and compare.
WATCHED = ("builtins", "contextlib", "functools", "importlib", "inspect", "io", "json", "math",
           "operator", "os", "random", "secrets", "numpy", "numpy.testing", "torch",
           "torch.testing", "torch.nn.functional", "torch.linalg", "triton", "triton.language")
CHECK_PACKAGE = "dma_ref.check"
# ipykernel binds these anew for every cell it runs (to forward input() to the front end).
REBOUND = {"builtins.input", "builtins.raw_input", "getpass.getpass"}


def _from_cells(obj: object) -> bool:
    """True when ``obj`` (or the function inside a partial or bound method) was defined in a
    notebook cell: IPython runs cells as module ``__main__`` from files named ipykernel_*."""
    for item in (obj, type(obj), getattr(obj, "func", None), getattr(obj, "__func__", None)):
        if item is None:
            continue
        if getattr(item, "__module__", None) == "__main__":
            return True
        code = getattr(item, "__code__", None)
        if isinstance(code, types.CodeType) and ("ipykernel_" in code.co_filename
                                 or code.co_filename.startswith("<ipython-input")):
            return True
    return False


def _watched_modules() -> list[str]:
    own = sorted(name for name in sys.modules
                 if (name == "dma_ref" or name.startswith("dma_ref.")) and name != __name__)
    return [name for name in WATCHED if name in sys.modules] + own


def origin(value: object) -> str:
    """``"__main__"`` for an object defined in a notebook cell, else the top-level package its
    function or class comes from (``torch``, ``numpy``, ``builtins`` ...)."""
    if _from_cells(value):
        return "__main__"
    module = getattr(value, "__module__", None)
    if not isinstance(module, str):
        module = type(value).__module__
    return module.split(".")[0]


def snapshot() -> dict[str, str]:
    """``{"module.attr": "identity:origin"}`` of every callable attribute of the watched modules
    (the library, numpy, torch, triton and dma_ref's loaded modules) and of ``torch.Tensor``'s own
    dictionary; a monkeypatch changes an identity (and usually the origin), a shadowing method
    adds a key."""
    out: dict[str, str] = {}
    for name in _watched_modules():
        module = sys.modules[name]
        for attr, value in list(vars(module).items()):
            if callable(value) and f"{name}.{attr}" not in REBOUND:
                out[f"{name}.{attr}"] = f"{id(value)}:{origin(value)}"
    torch = sys.modules.get("torch")
    if torch is not None:
        for attr, value in list(vars(torch.Tensor).items()):
            out[f"torch.Tensor.{attr}"] = f"{id(value)}:{origin(value)}"
    return out


def foreign_hooks() -> list[str]:
    """Hooks defined in the notebook's cells that could run code during grading or rewrite
    it: IPython input/AST transformers and event callbacks, import hooks, a tracer or profiler,
    and threads whose code comes from a cell."""
    found: list[str] = []
    shell = getattr(builtins, "get_ipython", lambda: None)()
    if shell is not None:
        for attr in ("input_transformers_cleanup", "input_transformers_post", "ast_transformers"):
            found += [f"IPython {attr}" for item in getattr(shell, attr, []) if _from_cells(item)]
        for event, callbacks in getattr(shell.events, "callbacks", {}).items():
            found += [f"IPython event {event}" for cb in callbacks if _from_cells(cb)]
    found += ["sys.meta_path" for item in sys.meta_path if _from_cells(item)]
    found += ["sys.path_hooks" for item in sys.path_hooks if _from_cells(item)]
    if sys.gettrace() is not None and _from_cells(sys.gettrace()):
        found.append("sys.settrace")
    if sys.getprofile() is not None and _from_cells(sys.getprofile()):
        found.append("sys.setprofile")
    for thread in threading.enumerate():
        if _from_cells(thread) or _from_cells(getattr(thread, "_target", None)):
            found.append(f"thread {thread.name}")
    return found


def write_snapshot(path: str) -> None:
    """Write ``{"snapshot": ..., "hooks": ...}`` as JSON to ``path`` (chosen by the grader)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump({"snapshot": snapshot(), "hooks": foreign_hooks()}, f)


def reload_checkers() -> None:
    """Re-execute ``dma_ref.check.core`` and then every loaded checker module from their files,
    so that whatever the notebook assigned into them is replaced by the genuine code."""
    importlib.reload(importlib.import_module(f"{CHECK_PACKAGE}.core"))
    for name in sorted(sys.modules):
        if name.startswith(f"{CHECK_PACKAGE}.") and name not in (__name__, f"{CHECK_PACKAGE}.core"):
            importlib.reload(sys.modules[name])


def recheck(module: str, checker: str, argument: str, seed: int, namespace: Mapping[str, object],
            path: str) -> None:
    """Run ``dma_ref.check.<module>.<checker>`` on the notebook's ``namespace[argument]`` with
    ``seed``, its printout swallowed; write the verdict as JSON to ``path``."""
    verdict = {"exercise": f"{module}.{checker}", "seed": seed, "passed": False}
    fn = namespace.get(argument)
    if not callable(fn):
        verdict["message"] = f"no function named {argument!r} is defined in the notebook"
    else:
        check = getattr(importlib.import_module(f"{CHECK_PACKAGE}.{module}"), checker)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            result = check(fn, seed=seed)
        verdict["passed"] = result.passed is True
        verdict["message"] = str(result.message)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(verdict, f)
