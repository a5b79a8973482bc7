"""Pick the device and make Triton usable on it, loudly.

On a machine without CUDA, Triton kernels run in its interpreter, which must be switched on
(``TRITON_INTERPRET=1``) before the first ``@triton.jit`` definition is executed; afterwards
launches fail with "0 active drivers". ``setup_device`` does that and then runs a tiny canary
kernel, which catches the known broken Triton/numpy pairings (triton 3.6 needs numpy < 2.4).
"""

from __future__ import annotations

import os
import sys

import torch


def setup_device(prefer: str | None = None, *, canary: bool = True) -> torch.device:
    """Return ``cuda`` when available (or ``prefer``), else ``cpu`` with the Triton interpreter on.

    Call it first, before importing ``dma_ref.kernels``. Raises ``RuntimeError`` with a fix when
    the kernels were already defined in the wrong mode or the canary kernel computes garbage.
    """
    use_cuda = torch.cuda.is_available() if prefer is None else prefer == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("prefer='cuda' but torch sees no CUDA device")
    if not use_cuda:
        if os.environ.get("TRITON_INTERPRET") != "1" and "dma_ref.kernels" in sys.modules:
            raise RuntimeError("dma_ref.kernels was imported before setup_device(): restart the "
                               "kernel and call setup_device() first (TRITON_INTERPRET=1 must be "
                               "set before any @triton.jit definition runs)")
        os.environ["TRITON_INTERPRET"] = "1"
    device = torch.device("cuda" if use_cuda else "cpu")
    if canary:
        run_canary(device)
    return device


def run_canary(device: torch.device) -> None:
    """Run ``z = x + 2y`` as a Triton kernel and compare it with PyTorch."""
    try:
        import triton
        import triton.language as tl
    except ImportError as err:  # pragma: no cover - triton is a hard dependency
        raise RuntimeError("triton is not installed: pip install -e '.[dev]'") from err

    @triton.jit
    def _canary(x_ptr, y_ptr, z_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < n
        tl.store(z_ptr + offs, tl.load(x_ptr + offs, mask=m) + 2 * tl.load(y_ptr + offs, mask=m), mask=m)

    x = torch.randn(100, device=device)
    y = torch.randn(100, device=device)
    z = torch.empty_like(x)
    try:
        _canary[(4,)](x, y, z, 100, BLOCK=32)
    except Exception as err:
        import numpy
        raise RuntimeError(f"the Triton canary kernel failed to run ({type(err).__name__}: {err}). "
                           f"triton {triton.__version__}, numpy {numpy.__version__}: triton 3.6 "
                           "needs numpy < 2.4 in the interpreter") from err
    if not torch.allclose(z, x + 2 * y):
        raise RuntimeError("the Triton canary kernel computed a wrong result: the Triton install "
                           "is broken on this machine")


def describe_environment() -> dict:
    """Versions and device, for the environment cells of the notebooks."""
    import numpy
    import triton
    return {
        "torch": torch.__version__, "triton": triton.__version__, "numpy": numpy.__version__,
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
    }
