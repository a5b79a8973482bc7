"""DMA's own method: ``dma_ref.kernels.dma_attention`` with the mask built inside the call, the
split of its time (builder, kernel alone, CUDA-graph replays, the tuned tiles), and its
correctness checks against the fp32 naive path and, in the dense regime, cuDNN."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ...naive import naive_dma_attention
from ...numerics import rel_err
from .baselines import Prepared, Unavailable
from .inputs import Case
from .timing import Timer, graphed


def prepare_dma_triton(case: Case, w: int, timer: Timer) -> Prepared:
    # dma_ref.kernels is imported here, not at the top: importing it defines Triton kernels,
    # which must wait until setup_device() has chosen between the GPU and the interpreter.
    try:
        from ...kernels import FWD_CONFIG, build_lifetimes, build_plan, dma_attention
        from ...kernels.launch import fit_config, tile_shape
    except ImportError as err:
        raise Unavailable(f"not available: dma_ref.kernels.dma_attention ({err})") from err

    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    sd = s.detach()
    notes = []
    tile = None
    try:
        # The whole mask construction one call does (lifetimes + per-block key lists), with the
        # forward's query-block size (the call's own tile choice), and the lifetime scan alone.
        cfg = fit_config(FWD_CONFIG, q.shape[-1], q.dtype, backward=False)
        tile = (cfg, *tile_shape(cfg, case.G, q.shape[2]))             # (cfg, GH, BLOCK_Q)
        build_ms = timer(lambda: build_plan(sd, w, q.shape[2], block_q=tile[2]))
        notes.append(f"build_ms={build_ms:.4f}")
        notes.append(f"lifetimes_ms={timer(lambda: build_lifetimes(sd, w)):.4f}")
    except (ImportError, AttributeError) as err:
        notes.append(f"builder not timed ({err})")

    def fwd():
        return dma_attention(q, k, v, s, w)

    def fwdbwd():
        return torch.autograd.grad(dma_attention(q, k, v, s, w), (q, k, v, s), do)

    def extra() -> list[str]:
        if tile is None:
            return []
        try:
            return dma_split(case, w, timer, fwd, fwdbwd, *tile)
        except Exception as err:  # noqa: BLE001 - the split is extra information, never fatal
            return [f"split not timed ({type(err).__name__}: {str(err)[:120]})"]
    return Prepared(fwd, fwdbwd, notes, extra=extra)


def dma_split(case: Case, w: int, timer: Timer, fwd, fwdbwd, cfg, GH: int, bq: int) -> list[str]:
    """Where DMA's time goes: the forward kernel alone on a prebuilt plan (``fwd_kernel_ms``),
    the whole forward and forward + backward replayed from a CUDA graph (``graph_fwd_ms``,
    ``graph_fwdbwd_ms``: the same GPU work without Python and launch overhead), and the tiles
    the autotuner chose (``tuned_fwd`` / ``tuned_bwd``: BLOCK_N, query heads per program,
    warps, stages). ``cfg, GH, bq``: the forward's tile, as ``prepare_dma_triton`` found it."""
    from ...kernels import build_plan
    from ...kernels.forward import dma_forward
    from ...kernels.launch import TUNERS

    q, k, v, s = case.q, case.k, case.v, case.s
    D, N = q.shape[-1], q.shape[2]
    sd = s.detach()
    plan = build_plan(sd, w, N, block_q=bq)
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    # s in its own dtype, as dma_attention passes it (the autotuner keys on the dtypes).
    kernel_ms = timer(lambda: dma_forward(qd, kd, vd, sd, plan, D**-0.5, cfg, GH, True))
    notes = [f"fwd_kernel_ms={kernel_ms:.4f}"]
    for name, fn in (("graph_fwd_ms", fwd), ("graph_fwdbwd_ms", fwdbwd)):
        notes.append(f"{name}={timer(graphed(fn)):.4f}")
    for name in ("fwd", "bwd"):
        best = getattr(TUNERS.get(name), "best_config", None)
        if best is not None:
            notes.append(f"tuned_{name}=BN{best.kwargs['BLOCK_N']}/GH{best.kwargs['GH']}/"
                         f"w{best.num_warps}/s{best.num_stages}")
    return notes


def naive_reference(case: Case, w: int) -> tuple[torch.Tensor, tuple]:
    """fp32 naive DMA output and gradients (q, k, v, s) on the GPU, for small N."""
    leaves = [t.detach().float().requires_grad_(True) for t in (case.q, case.k, case.v, case.s)]
    o = naive_dma_attention(*leaves, w)
    grads = torch.autograd.grad(o, leaves, case.do.float())
    return o.detach(), grads


def dma_checks(case: Case, w: int, prepared: Prepared, ref_n_max: int) -> list[str]:
    """Relative errors of dma_triton: vs fp32 naive (N <= ref_n_max), vs cuDNN when w >= N."""
    from ...kernels import dma_attention

    notes = []
    N = case.q.shape[2]
    if N <= ref_n_max:
        o_ref, g_ref = naive_reference(case, w)
        case.ref[w] = o_ref
        o = prepared.fwd()
        grads = prepared.fwdbwd()
        errs = [rel_err(o, o_ref)] + [rel_err(a, b) for a, b in zip(grads, g_ref)]
        notes.append("rel err vs fp32 naive o/dq/dk/dv/ds = " + "/".join(f"{x:.1e}" for x in errs))
    if w >= N:
        # Constant scores change no softmax: DMA with w >= N must equal plain causal attention.
        with torch.no_grad():
            s_const = torch.full_like(case.s, 0.5)
            o = dma_attention(case.q, case.k, case.v, s_const, w)
            k_rep, v_rep = (t.repeat_interleave(case.G, dim=1) for t in (case.k, case.v))
            with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
                o_sdpa = F.scaled_dot_product_attention(case.q, k_rep, v_rep, is_causal=True)
        notes.append(f"rel err vs sdpa_cudnn (constant s, w >= N) = {rel_err(o, o_sdpa):.1e}")
    return notes
