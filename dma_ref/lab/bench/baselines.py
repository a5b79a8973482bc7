"""The baselines, each prepared on the shared inputs: ``prepare_<method>(case, w, timer) ->
Prepared`` (SDPA's cuDNN, FlashAttention-2 and mem-efficient backends, FlexAttention with a
BlockMask, the official flash-sparse-attn Triton kernel when importable)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from .inputs import Case, dense_bias_from_lifetimes, dense_mask_from_lifetimes, get_lifetimes
from .timing import Timer, host_ms


class Unavailable(Exception):
    """The method cannot run in this environment (recorded, not fatal)."""


@dataclass
class Prepared:
    """A method ready to run: ``fwd() -> o`` and ``fwdbwd()``, plus notes from its setup."""

    fwd: Callable[[], torch.Tensor]
    fwdbwd: Callable[[], object]
    notes: list[str] = field(default_factory=list)
    to_bhnd: Callable[[torch.Tensor], torch.Tensor] = (lambda o: o)   # output -> [B, Hq, N, D]
    # More timings for the note, run after the peak memory is read (CUDA graphs keep a pool).
    extra: Callable[[], list[str]] | None = None


def repeat_kv(case: Case) -> tuple[torch.Tensor, torch.Tensor]:
    k = case.k.detach().repeat_interleave(case.G, dim=1).requires_grad_(True)
    v = case.v.detach().repeat_interleave(case.G, dim=1).requires_grad_(True)
    return k, v


def prepare_sdpa_dense(case: Case, backend) -> Prepared:
    q, do = case.q, case.do
    k, v = repeat_kv(case)

    def fwd():
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def fwdbwd():
        with sdpa_kernel([backend]):
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return torch.autograd.grad(o, (q, k, v), do)
    return Prepared(fwd, fwdbwd, ["k, v repeated to Hq heads outside the timed region"])


def prepare_sdpa_cudnn(case: Case, w: int, timer: Timer) -> Prepared:
    return prepare_sdpa_dense(case, SDPBackend.CUDNN_ATTENTION)


def prepare_sdpa_flash(case: Case, w: int, timer: Timer) -> Prepared:
    return prepare_sdpa_dense(case, SDPBackend.FLASH_ATTENTION)


def prepare_sdpa_efficient_bias(case: Case, w: int, timer: Timer) -> Prepared:
    B, Hq, N, D = case.q.shape
    Hkv, G = case.k.shape[1], case.G
    e = get_lifetimes(case, w)
    s = case.s.detach()
    built = {}
    build = host_ms(lambda: built.setdefault("bias", dense_bias_from_lifetimes(e, s)))
    # One [N, N] bias per KV head, broadcast (stride 0) over the G query heads of its group:
    # the batch axis becomes (B, Hkv) and the head axis the group.
    bias = built["bias"].reshape(B * Hkv, 1, N, N).expand(B * Hkv, G, N, N)
    k_rep, v_rep = repeat_kv(case)
    q, do = case.q, case.do
    qg = q.view(B * Hkv, G, N, D)
    kg, vg = k_rep.view(B * Hkv, G, N, D), v_rep.view(B * Hkv, G, N, D)

    def fwd():
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            return F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias).reshape(B, Hq, N, D)

    def fwdbwd():
        with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
            o = F.scaled_dot_product_attention(qg, kg, vg, attn_mask=bias)
            return torch.autograd.grad(o, (q, k_rep, v_rep), do.view(B * Hkv, G, N, D))
    return Prepared(fwd, fwdbwd, [f"bias build {build:.1f} ms (not timed)",
                                  "no gradient for s (bias is a constant)"])


FLEX: dict = {}


def prepare_flex_blockmask(case: Case, w: int, timer: Timer) -> Prepared:
    # Lazily: flex_attention pulls in torch.compile's machinery, which the other methods skip.
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    B, Hq, N, D = case.q.shape
    G = case.G
    if "compiled" not in FLEX:
        # One compiled callable; every (D, N) compiles once (static shapes). The score_mod and
        # mask_mod closures are created once per (D, N) and read buffers that are refilled per
        # window, so a new window does not trigger a recompilation.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        FLEX["compiled"] = torch.compile(flex_attention, dynamic=False)
    key = (id(case), N, D)
    if FLEX.get("key") != key:
        e_buf = torch.empty(case.k.shape[0], case.k.shape[1], N, dtype=torch.int32, device="cuda")
        s = case.s

        def mask_mod(b, h, q_idx, kv_idx):
            return (kv_idx <= q_idx) & (q_idx < e_buf[b, h // G, kv_idx])

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + s[b, h // G, kv_idx]
        FLEX.update(key=key, e_buf=e_buf, mask_mod=mask_mod, score_mod=score_mod)
    e_buf, mask_mod, score_mod = FLEX["e_buf"], FLEX["mask_mod"], FLEX["score_mod"]
    e_buf.copy_(get_lifetimes(case, w))
    built = {}

    def build():
        with warnings.catch_warnings():             # _compile=True is deprecated, still works
            warnings.simplefilter("ignore", DeprecationWarning)
            built["bm"] = create_block_mask(mask_mod, B, Hq, N, N, device="cuda", _compile=True)
    build()                                           # first call compiles
    build_ms = host_ms(build)
    bm = built["bm"]
    flex = FLEX["compiled"]
    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    notes = [f"block-mask build {build_ms:.1f} ms (not timed)", case.e_note.get(w, ""),
             f"block density {block_density(bm):.3f}"]

    def fwd():
        return flex(q, k, v, score_mod=score_mod, block_mask=bm, enable_gqa=True)

    def fwdbwd():
        return torch.autograd.grad(fwd(), (q, k, v, s), do)
    return Prepared(fwd, fwdbwd, notes)


def block_density(bm) -> float:
    """Fraction of causal 128x128 tiles the block mask visits."""
    try:
        n_q = bm.kv_num_blocks.shape[-1]
        visited = bm.kv_num_blocks.sum() + (bm.full_kv_num_blocks.sum()
                                            if bm.full_kv_num_blocks is not None else 0)
        causal = bm.kv_num_blocks.shape[0] * bm.kv_num_blocks.shape[1] * n_q * (n_q + 1) / 2
        return float(visited) / causal
    except Exception:  # noqa: BLE001 - BlockMask internals differ between torch versions
        return float("nan")


def official_available() -> tuple[bool, str]:
    """Whether flash-sparse-attn's Triton kernel is importable, and its version or the reason."""
    try:
        import flash_sparse_attn
        from flash_sparse_attn.flash_sparse_attn_triton import triton_sparse_attn_func  # noqa: F401
        return True, f"flash-sparse-attn {flash_sparse_attn.__version__}"
    except Exception as err:  # noqa: BLE001 - any import failure means "not available"
        return False, ("not available: flash-sparse-attn not importable "
                       f"({type(err).__name__}: {err})")


def prepare_official_triton(case: Case, w: int, timer: Timer) -> Prepared:
    ok, version = official_available()
    if not ok:
        raise Unavailable(version)
    from flash_sparse_attn.flash_sparse_attn_triton import triton_sparse_attn_func

    e = get_lifetimes(case, w)
    built = {}
    build = host_ms(lambda: built.setdefault("mask", dense_mask_from_lifetimes(e)))
    mask = built["mask"]                                # bool [B, Hkv, N, N]
    q, k, v, s, do = case.q, case.k, case.v, case.s, case.do
    # The official kernel takes [B, N, H, D]; transposed views avoid copies (it reads strides).
    # The bias is the score per key, broadcast over query rows: [B, Hkv, 1, N].
    qt, kt, vt, dot = (t.transpose(1, 2) for t in (q, k, v, do))

    def fwd():
        return triton_sparse_attn_func(qt, kt, vt, attn_mask=mask, attn_bias=s[:, :, None, :],
                                       is_causal=True)

    def fwdbwd():
        return torch.autograd.grad(fwd(), (q, k, v, s), dot)
    return Prepared(fwd, fwdbwd, [version, f"dense bool mask build {build:.1f} ms (not timed)"],
                    to_bhnd=lambda o: o.transpose(1, 2))
