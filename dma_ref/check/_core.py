"""The machinery shared by the exercise checkers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_MISSING = object()


@dataclass
class Result:
    """Outcome of one exercise check; ``bool(result)`` is True when solved."""

    name: str
    passed: bool
    message: str

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        return f"{self.name}: {'PASSED' if self.passed else 'NOT YET'} - {self.message}"


def run_checks(name: str, trials: Callable[[], None], *, strict: bool = False, quiet: bool = False) -> Result:
    """Run ``trials`` (which asserts); turn the outcome into a :class:`Result`.

    ``strict=True`` re-raises the failure as ``AssertionError`` (for tests).
    """
    try:
        trials()
        result = Result(name, True, "all checks passed")
    except NotImplementedError:
        result = Result(name, False, "not attempted yet: replace the `raise NotImplementedError`")
    except Exception as err:  # noqa: BLE001 - any wrong answer or crash of the learner's code is "not yet"
        result = Result(name, False, f"{type(err).__name__}: {err}")
    if not quiet:
        print(repr(result))
    if strict and not result.passed:
        raise AssertionError(repr(result))
    return result


@contextlib.contextmanager
def forbid(message: str, *places: tuple[object, str]) -> Iterator[None]:
    """While the learner's function runs, calling any ``owner.name`` of ``places`` raises
    ``AssertionError(message)``: an exercise that asks to build X must not call the package's X.

    The checker computes its reference outside this block. Owners are modules or classes
    (``(torch.Tensor, "softmax")``: the method is inherited from a C base, so it is shadowed and
    the shadow removed afterwards).
    """
    def forbidden(*args, **kwargs):
        raise AssertionError(message)
    saved = [(owner, name, vars(owner).get(name, _MISSING)) for owner, name in places]
    for owner, name, _ in saved:
        setattr(owner, name, forbidden)
    try:
        yield
    finally:
        for owner, name, old in reversed(saved):
            if old is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, old)


def forbid_package(name: str, home, message: str | None = None):
    """``forbid`` the package function ``dma_ref.<name>`` and its home module's ``home.<name>``."""
    import dma_ref
    message = message or f"write it yourself: the exercise is to build {name}, not to call it"
    return forbid(message, (dma_ref, name), (home, name))
