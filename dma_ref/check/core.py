"""The machinery shared by the exercise checkers: results, points, seeds, messages, forbidden calls.

Each checker is declared with ``@exercise(points=n)``: its :class:`Result` carries ``points``
(``n`` when solved, else 0) and ``max_points``. What a checker prints in the notebook is for the
student only: ``python -m dma_ref.grade`` never reads it, it runs every checker again itself with
a seed the notebook could not know (:mod:`dma_ref.check.audit`).

Every checker draws its random inputs from one seed, reported in its verdict: pass it back
(``check_x(fn, seed=...)``) to replay exactly the inputs of a failure. Without ``seed=`` the seed
is read from torch's global generator (which it leaves as it was), so ``torch.manual_seed``
before the call, as the tests do, makes a run reproducible too.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

_MISSING = object()
# (exercise id, points) of the checker running now; run_checks reads it to score its verdict.
_ACTIVE: contextvars.ContextVar[tuple[str, int] | None] = contextvars.ContextVar(
    "dma_ref_active_exercise", default=None)


def resolve_seed(seed: int | None) -> int:
    """``seed``, or one read from torch's global generator when None, without advancing it (a
    checker never changes the random numbers of the cells after it)."""
    if seed is None:
        state = torch.random.get_rng_state()
        try:
            return int(torch.randint(0, 2**31 - 1, ()).item())
        finally:
            torch.random.set_rng_state(state)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: the checker's only source of randomness."""
    return torch.Generator().manual_seed(seed)


def context(where: str) -> Callable[[str], str]:
    """``torch.testing.assert_close`` message hook: prefix its report with the failing case."""
    return lambda report: f"{where}: {report}"


def expect_tensor(got: object, *, dtype: torch.dtype | None = None,
                  shape: tuple[int, ...] | None = None, where: str = "") -> None:
    """Assert that the learner returned a tensor (of ``dtype`` and ``shape`` when given); the
    message says what came back instead, prefixed with ``where`` (the failing case) if given."""
    kind = "a torch.Tensor" if dtype is None else f"a {str(dtype).removeprefix('torch.')} tensor"
    if not isinstance(got, torch.Tensor) or (dtype is not None and got.dtype != dtype):
        raise AssertionError(f"return {kind}, got {getattr(got, 'dtype', type(got).__name__)}")
    if shape is not None and tuple(got.shape) != tuple(shape):
        prefix = f"{where}: " if where else ""
        raise AssertionError(f"{prefix}expected shape {tuple(shape)}, got {tuple(got.shape)}")


@dataclass
class Result:
    """Outcome of one exercise check; ``bool(result)`` is True when solved."""

    name: str
    passed: bool
    message: str
    seed: int | None = None
    points: int = 0
    max_points: int = 0
    exercise: str = ""

    def __bool__(self) -> bool:
        return self.passed

    def __repr__(self) -> str:
        seed = "" if self.seed is None else f" [seed={self.seed}]"
        score = f" ({self.points}/{self.max_points} points)" if self.max_points else ""
        return (f"{self.name}: {'PASSED' if self.passed else 'NOT YET'}{score} - "
                f"{self.message}{seed}")


def exercise(points: int) -> Callable[[Callable[..., Result]], Callable[..., Result]]:
    """Declare a checker worth ``points`` (an int >= 1): its Result is scored, under the id
    ``"<module>.<checker>"`` (e.g. ``"nb02.check_row_mask"``) the grader reports."""
    if not isinstance(points, int) or isinstance(points, bool) or points < 1:
        raise ValueError(f"points must be an int >= 1, got {points!r}")

    def declare(check: Callable[..., Result]) -> Callable[..., Result]:
        exercise_id = f"{check.__module__.rsplit('.', 1)[-1]}.{check.__name__}"

        @functools.wraps(check)
        def scored(*args, **kwargs) -> Result:
            token = _ACTIVE.set((exercise_id, points))
            try:
                return check(*args, **kwargs)
            finally:
                _ACTIVE.reset(token)
        scored.points = points
        scored.exercise_id = exercise_id
        return scored
    return declare


def run_checks(name: str, trials: Callable[[], None], *, strict: bool = False, quiet: bool = False,
               seed: int | None = None) -> Result:
    """Run ``trials`` (which asserts); turn the outcome into a :class:`Result` that names
    ``seed``, the seed its inputs came from.

    ``strict=True`` re-raises the failure as ``AssertionError`` (for tests).
    """
    try:
        trials()
        result = Result(name, True, "all checks passed", seed)
    except NotImplementedError:
        result = Result(name, False, "not attempted yet: replace the `raise NotImplementedError`",
                        seed)
    # Any wrong answer or crash of the learner's code is "not yet", not an error of the notebook.
    except Exception as err:  # noqa: BLE001
        result = Result(name, False, f"{type(err).__name__}: {err}", seed)
    active = _ACTIVE.get()
    if active is not None:
        result.exercise, result.max_points = active
        result.points = result.max_points if result.passed else 0
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
