"""Input validation shared by every public function.

Each check raises ``TypeError`` (wrong kind of object or dtype) or ``ValueError`` (wrong shape
or value) with a message that names the argument and the expected shape, so that a user never
gets a silent broadcast or a cryptic error from deep inside a matmul.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_tensor(x, name: str, ndim: int, shape_doc: str, *, floating: bool = True) -> None:
    """Raise unless ``x`` is a tensor with ``ndim`` dims (and a float dtype if ``floating``)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {shape_doc}, got {type(x).__name__}")
    if x.dim() != ndim:
        raise ValueError(
            f"{name} must have {ndim} dims, shape {shape_doc}; got shape {tuple(x.shape)}"
        )
    if floating and x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a floating tensor (fp16/bf16/fp32/fp64), got {x.dtype}")


def check_qkv(q, k, v, *, q_le_k: bool = False) -> tuple[int, int, int, int, int, int]:
    """Validate ``q [B, Hq, Q, D]``, ``k, v [B, Hkv, K, D]``; return ``(B, Hq, Hkv, Q, K, D)``.

    ``q_le_k``: also require Q <= K (DMA places query row i at key position K - Q + i).
    """
    check_tensor(q, "q", 4, "[B, Hq, Q, D]")
    check_tensor(k, "k", 4, "[B, Hkv, K, D]")
    check_tensor(v, "v", 4, "[B, Hkv, K, D]")
    B, Hq, Q, D = q.shape
    if k.shape != v.shape:
        raise ValueError(
            f"k and v must have the same shape [B, Hkv, K, D]; got k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if D < 1:
        raise ValueError(f"q's head dim (last dim of [B, Hq, Q, D]) must be >= 1; got q {tuple(q.shape)}")
    Bk, Hkv, K, Dk = k.shape
    if Bk != B:
        raise ValueError(f"k must have batch size B={B} like q, shape [B, Hkv, K, D]; got {tuple(k.shape)}")
    if Dk != D:
        raise ValueError(f"k must have head dim D={D} like q, shape [B, Hkv, K, D]; got {tuple(k.shape)}")
    if Hkv == 0 or Hq % Hkv != 0:
        raise ValueError(
            f"q's head count Hq={Hq} must be a multiple of k's head count Hkv={Hkv} (GQA: Hq = G*Hkv)"
        )
    for name, t in (("k", k), ("v", v)):
        if t.device != q.device:
            raise ValueError(f"{name} is on {t.device} but q is on {q.device}; all inputs must share a device")
        if t.dtype != q.dtype:
            raise TypeError(f"{name} has dtype {t.dtype} but q has {q.dtype}; q, k, v must share a dtype")
    if q_le_k and Q > K:
        raise ValueError(f"q must have at most K={K} rows, shape [B, Hq, Q, D] with Q <= K "
                         f"(query row i sits at key position K - Q + i); got q {tuple(q.shape)}")
    return B, Hq, Hkv, Q, K, D


def check_score_values(s: torch.Tensor) -> None:
    """Raise unless every score is a real number or -inf (NaN and +inf are rejected).

    +inf is not a score: accepted, it would turn the lse of every row keeping that key into
    +inf and the row into inf - inf = NaN or silent zeros.
    """
    # The happy path is one reduction and one host sync: max propagates NaN, and NaN < inf is
    # False, so the max is below +inf exactly when no score is NaN or +inf.
    if s.numel() == 0 or float(s.detach().max()) < float("inf"):
        return
    if torch.isnan(s).any():
        raise ValueError("s contains NaN; scores must be real numbers (-inf is allowed)")
    if torch.isposinf(s).any():
        raise ValueError("s contains +inf; scores must be real numbers (-inf is allowed). "
                         "In the exp form, A * softplus(.) > 88 overflows fp32: use form='log' "
                         "or a smaller A")


def check_scores(s, B: int, Hkv: int, K: int, device: torch.device, *, values: bool = True) -> None:
    """Validate DMA scores ``s [B, Hkv, K]`` (any float dtype; no NaN or +inf when ``values``:
    that part reads s back to the host)."""
    check_tensor(s, "s", 3, "[B, Hkv, K]")
    if tuple(s.shape) != (B, Hkv, K):
        raise ValueError(f"s must have shape [B, Hkv, K] = {[B, Hkv, K]}; got {tuple(s.shape)}")
    if s.device != device:
        raise ValueError(f"s is on {s.device} but q is on {device}; all inputs must share a device")
    if values:
        check_score_values(s)


def check_window(window) -> int:
    """Validate the window ``w`` (a positive int)."""
    if isinstance(window, bool) or not isinstance(window, int):
        raise TypeError(f"window must be a positive int, got {type(window).__name__}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    return window


def check_flag(value, name: str) -> bool:
    """Validate a bool option (``causal``, ``deterministic``): 0/1 or strings are not flags."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def check_mode(mode) -> str:
    if mode not in ("row", "global"):
        raise ValueError(f"mode must be 'row' or 'global', got {mode!r}")
    return mode


def default_scale(scale, D: int) -> float:
    if scale is None:
        return D**-0.5
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    return float(scale)
