"""Launch a learner's ``@triton.jit`` kernel the way a puzzle checker needs it: on guarded
buffers, with no torch or package code doing the work, and report the first wrong element.

* ``guarded`` places a tensor inside a larger buffer whose padding is ``NaN`` (inputs: a load
  past the edge without a mask poisons the result) or a sentinel (outputs: a store past the edge
  without a mask is caught by ``Guarded.check_untouched``). It also gives a tensor a
  non-contiguous layout: rows padded (row stride > width) or stored transposed.
* ``launch`` refuses anything but a Triton kernel defined for the interpreter (the buffers are
  CPU tensors) and runs it while every torch function that
  computes raises, and while calling a ``@triton.jit`` helper of this package raises (checked on
  the objects themselves, so an alias does not help). Under the interpreter the kernel's body is
  Python, so a kernel could otherwise call ``torch.softmax`` on a global tensor.
* ``expect_close`` names the shape, the first wrong index, both values and the seed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

PAD = 64                 # elements of padding on every side: covers a block overhang up to 64
SENTINEL = -1234.5       # what an output holds where the kernel did not store
LAYOUTS = ("contiguous", "padded", "transposed")

# What the interpreter itself calls on the arguments to turn them into pointers: bookkeeping,
# no arithmetic. Every other torch function is refused while the learner's kernel runs.
BOOKKEEPING = frozenset({"untyped_storage", "new_empty", "storage_offset", "size", "stride",
                         "data_ptr", "__get__", "set_"})


@dataclass
class Guarded:
    """``view`` (what the kernel gets) inside ``buffer``; ``inside`` marks the view's elements."""

    view: torch.Tensor
    buffer: torch.Tensor
    inside: torch.Tensor
    fill: float

    def check_untouched(self, where: str) -> None:
        """Raise if the kernel stored anywhere in the padding around the view."""
        pad = self.buffer[~self.inside]
        changed = ~(pad == self.fill) if not math.isnan(self.fill) else ~torch.isnan(pad)
        if changed.any():
            raise AssertionError(f"{where}: the kernel stored outside the output tensor "
                                 f"({int(changed.sum())} elements past its edges): a store "
                                 "without the mask of the ragged edge?")

    def check_written(self) -> None:
        """Raise when the kernel stored nothing at all (the stub, or a mask that is never true)."""
        if bool((self.view == self.fill).all()):
            raise AssertionError("not attempted yet: the kernel stored nothing (write its body, "
                                 "and check that its store mask is not always false)")


def guarded(x: torch.Tensor, layout: str = "contiguous", *, fill: float = math.nan) -> Guarded:
    """A copy of ``x`` (1-D or 2-D) inside a buffer padded by ``PAD`` elements filled with ``fill``.

    layout ``"contiguous"``: the view is contiguous (1-D or 2-D); ``"padded"`` (2-D): rows of
    the buffer are wider than the view (row stride > number of columns); ``"transposed"`` (2-D):
    the buffer holds ``x.T`` and the view is its transpose (column-major, stride ``(1, ...)``).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if x.dim() not in (1, 2) or (x.dim() == 1 and layout != "contiguous"):
        raise ValueError(f"x must be 1-D (contiguous) or 2-D, got shape {tuple(x.shape)}")
    if x.dim() == 1 or layout == "contiguous":
        buffer = torch.full((x.numel() + 2 * PAD,), fill, dtype=x.dtype)
        inside = torch.zeros(buffer.shape, dtype=torch.bool)
        inside[PAD:PAD + x.numel()] = True
        view = buffer[PAD:PAD + x.numel()].view(x.shape)
    else:
        stored = x.T if layout == "transposed" else x
        rows, cols = stored.shape
        buffer = torch.full((rows + 2 * PAD, cols + 2 * PAD), fill, dtype=x.dtype)
        inside = torch.zeros(buffer.shape, dtype=torch.bool)
        inside[PAD:PAD + rows, PAD:PAD + cols] = True
        view = buffer[PAD:PAD + rows, PAD:PAD + cols]
        view = view.T if layout == "transposed" else view
    view.copy_(x)
    return Guarded(view, buffer, inside, fill)


def output(shape: tuple[int, ...], dtype: torch.dtype = torch.float32,
           layout: str = "contiguous") -> Guarded:
    """An output tensor filled with ``SENTINEL`` inside a sentinel-filled guard buffer."""
    return guarded(torch.full(shape, SENTINEL, dtype=dtype), layout, fill=SENTINEL)


class NoTorchWork(TorchFunctionMode):
    """Refuse every torch function except the interpreter's pointer bookkeeping."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") not in BOOKKEEPING:
            raise AssertionError(f"the kernel called torch ({getattr(func, '__name__', func)}): "
                                 "a puzzle is solved with triton.language (tl.*) only")
        return func(*args, **(kwargs or {}))


def is_package_code(fn: object) -> bool:
    """Whether ``fn`` (a function or a Triton kernel) is defined in this package."""
    module = getattr(getattr(fn, "fn", fn), "__module__", "") or ""
    return module == "dma_ref" or module.startswith(("dma_ref.", "kernels"))


@contextlib.contextmanager
def no_package_helpers() -> Iterator[None]:
    """While active, calling any of this package's ``@triton.jit`` functions from a kernel
    raises (under the interpreter a call goes through ``InterpretedFunction.__call__``)."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:                       # pragma: no cover - triton always has it
        yield
        return
    original = InterpretedFunction.__call__

    def guarded_call(self, *args, **kwargs):
        if is_package_code(self):
            raise AssertionError(f"the kernel calls the package's {self.__name__}: write the "
                                 "puzzle's code yourself")
        return original(self, *args, **kwargs)

    InterpretedFunction.__call__ = guarded_call
    try:
        yield
    finally:
        InterpretedFunction.__call__ = original


def require_kernel(kernel: object) -> None:
    """``TypeError`` unless ``kernel`` is a ``@triton.jit`` function written outside the package."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import KernelInterface
    if not isinstance(kernel, KernelInterface) or not hasattr(kernel, "fn"):
        raise TypeError(f"pass the @triton.jit kernel itself, got {type(kernel).__name__}")
    if not isinstance(kernel, InterpretedFunction):
        raise TypeError("the puzzles run in Triton's interpreter on CPU tensors: call "
                        "dma_ref.setup_device(prefer='cpu') before any kernel is defined")
    if is_package_code(kernel):
        raise AssertionError(f"{kernel.fn.__name__} is the package's kernel: write your own")


def launch(kernel, grid: tuple[int, ...], *args, **constexprs) -> None:
    """``kernel[grid](*args, **constexprs)`` with the guards of this module; a
    ``NotImplementedError`` raised inside the kernel comes back as itself."""
    require_kernel(kernel)
    try:
        with no_package_helpers(), NoTorchWork():
            kernel[grid](*args, **constexprs)
    except Exception as err:
        cause = err
        while cause is not None:
            if isinstance(cause, (NotImplementedError, AssertionError)):
                raise cause from None
            cause = cause.__cause__
        raise


def expect_close(got: torch.Tensor, want: torch.Tensor, where: str, *, atol: float = 1e-5,
                 rtol: float = 1e-5) -> None:
    """Raise ``AssertionError`` naming ``where`` (shape, seed), the first wrong index and both
    values. Equal infinities match; a NaN never does."""
    got_d, want_d = got.detach().double(), want.detach().double()
    ok = torch.isclose(got_d, want_d, atol=atol, rtol=rtol) & ~torch.isnan(got_d)
    if ok.all():
        return
    bad = (~ok).nonzero()
    index = tuple(bad[0].tolist())
    got_x, want_x = float(got_d[index]), float(want_d[index])
    hint = ""
    if got_x == SENTINEL:
        hint = " (the kernel never stored there)"
    elif math.isnan(got_x):
        hint = (" (NaN: a load past an edge without a mask reads the NaN padding around the "
                "inputs, or an exp(-inf - (-inf)))")
    raise AssertionError(f"{where}: {len(bad)} of {ok.numel()} elements wrong; first at index "
                         f"{index}: got {got_x:.6g}, expected {want_x:.6g}{hint}")
