"""Stubs, plausible wrong kernels and bypasses of the Triton exercises of notebooks 06 (the DMA
forward over gathered unions) and 07 (the key-major dK, dV, ds pass), kept beside the tests: the
package ships only the checkers (``dma_ref.check.nb06``, ``nb07``). The solutions are written
once, in the solved notebooks (``dma_ref.course.solutions("06").dma_fwd_kernel``,
``solutions("07").key_major_kernel``); each wrong kernel is a :func:`mutant` of one, a few
``(old, new)`` edits of its source."""

from __future__ import annotations

import atexit
import functools
import importlib.util
import inspect
import shutil
import tempfile
from pathlib import Path

import torch
import triton
import triton.language as tl
from dma_ref.kernels import dma_attention as fast_attention
from dma_ref.kernels.tiles import keep_pairs as package_keep_pairs

from dma_ref import naive_dma_attention as reference_attention
from dma_ref.course import solutions

S06, S07 = solutions("06"), solutions("07")


@functools.cache
def _folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="dma_mutants_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def mutant(solution, name: str, *edits: tuple[str, str], **helpers):
    """The ``@triton.jit`` function ``solution`` with each ``(old, new)`` edit made to its source,
    jitted as ``name`` in a module of its own (a real file: ``@triton.jit`` reads the source with
    ``inspect``) that sees the names of the solution's module (``tl``, ``DOT_PRECISION``, its
    jitted helpers), ``helpers`` (e.g. a mutated helper) in place of the ones they name.

    Each ``old`` must occur exactly once in the solution's source, and each helper must be a
    global name the solution reads: when the solution changes, the mutant fails here rather than
    quietly testing the right kernel."""
    fn = solution.fn
    assert edits or helpers, f"mutant {name}: no edit, no helper (it would be the solution)"
    source = inspect.getsource(fn)
    source = source[source.index(f"def {fn.__name__}("):]            # the decorator off
    mutated = source
    for old, new in edits:
        found = mutated.count(old)
        assert found == 1, f"mutant {name}: edit {old!r} found {found} times in {fn.__name__}"
        mutated = mutated.replace(old, new)
    assert not edits or mutated != source, f"mutant {name}: the edits change nothing"
    for helper in helpers:
        assert helper in fn.__code__.co_names, f"mutant {name}: {fn.__name__} reads no {helper}"
    path = _folder() / f"{name}.py"
    path.write_text(f'"""{fn.__name__} of {fn.__module__}, mutated: {name}."""\n\n\n'
                    "@triton.jit\n" + mutated.replace(f"def {fn.__name__}(", f"def {name}(", 1),
                    encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    vars(module).update({k: v for k, v in fn.__globals__.items() if not k.startswith("__")})
    vars(module).update(helpers)
    spec.loader.exec_module(module)
    return getattr(module, name)


# Tensors a bypass could reach from inside a kernel (the interpreter runs its body as Python).
SOME_Q, SOME_KV, SOME_S = torch.ones(1, 1, 4, 16), torch.ones(1, 1, 4, 16), torch.zeros(1, 1, 4)

# ------------------------------------------------------------------ notebook 06: the forward


@triton.jit
def fwd_stub(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
             Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
             BN: tl.constexpr):
    pass


# Rows at positions i instead of K - Q + i: wrong whenever Q < K.
fwd_top_left = mutant(S06.dma_fwd_kernel, "fwd_top_left", ("p = K - Q + i", "p = i"))

# Query head h read from KV head h % Hkv (interleaved) instead of h // G (grouped).
fwd_interleaved_heads = mutant(S06.dma_fwd_kernel, "fwd_interleaved_heads",
                               ("(bh % Hq) // G", "(bh % Hq) % Hkv"))

# exp(m - m_new) with m = m_new = -inf (a chunk a row keeps nothing of): NaN.
fwd_no_nan_guard = mutant(S06.dma_fwd_kernel, "fwd_no_nan_guard",
                          ('tl.where(m_new == float("-inf"), 0.0, m_new)', "m_new"),
                          ("tl.where(empty, 1.0, l)", "l"),
                          ('tl.where(empty, float("-inf"), m + tl.log(l_safe))',
                           "m + tl.log(l_safe)"))

# The list's last chunk is read past its end (the next block's keys, or the padding).
fwd_unmasked_list = mutant(S06.dma_fwd_kernel, "fwd_unmasked_list",
                           ("valid = u < end", "valid = u >= 0"))


@triton.jit
def fwd_by_torch(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                 Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                 BN: tl.constexpr):
    # A bypass: the interpreter runs the body as Python, so it could call the reference.
    reference_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4)


@triton.jit
def fwd_by_package_op(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                      Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                      BN: tl.constexpr):
    # A bypass: the package's attention (its kernels behind an alias), from inside the kernel.
    fast_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4)


@triton.jit
def fwd_by_package_helper(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, off_ptr, idx_ptr, o_ptr, lse_ptr,
                          Q, K, Hq, Hkv, n_blocks, scale, D: tl.constexpr, BM: tl.constexpr,
                          BN: tl.constexpr):
    # A bypass: the package's keep test under an alias.
    j = tl.arange(0, BN)
    p = tl.arange(0, BM)
    x = tl.zeros([BM, BN], tl.float32)
    package_keep_pairs(x, j, j >= 0, p, e_ptr, 0, True, True, True)


def fwd_package_kernel():
    """A bypass: the package's own kernel object passed as the learner's."""
    from dma_ref.kernels.forward import dma_fwd_kernel
    return dma_fwd_kernel

# ------------------------------------------------------------ notebook 07: key-major dK, dV, ds


@triton.jit
def km_stub(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
            ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr):
    pass


# Forgets the other G - 1 query heads of the group (GQA).
km_one_head = mutant(S07.key_major_kernel, "km_one_head", ("range(G)", "range(1)"))

# Walks rows [j0, e_max) as if row i sat at position i: misses rows when Q < K.
km_rows_as_positions = mutant(S07.key_major_kernel, "km_rows_as_positions",
                              ("tl.maximum(kb * BN - (K - Q), 0)", "kb * BN"),
                              ("tl.max(e_j, 0) - (K - Q)", "tl.max(e_j, 0)"))

# Delta as a sum over this key block only (right only when the block is the whole row).
km_delta_from_tile = mutant(
    S07.key_major_kernel, "km_delta_from_tile",
    score_gradient=mutant(S07.score_gradient, "score_gradient_delta_from_tile",
                          ("dP - delta[:, None]", "dP - tl.sum(P * dP, 1)[:, None]")))

# exp(-inf - (-inf)) on the empty row: NaN.
km_no_lse_guard = mutant(
    S07.key_major_kernel, "km_no_lse_guard",
    probabilities=mutant(S07.probabilities, "probabilities_no_lse_guard",
                         ('    lse = tl.where(lse == float("-inf"), 0.0, lse)\n', "")))


@triton.jit
def km_by_torch(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr, BM: tl.constexpr,
                BN: tl.constexpr):
    # A bypass: autograd of the reference, from inside the kernel.
    torch.autograd.grad(reference_attention(SOME_Q, SOME_KV, SOME_KV, SOME_S, 4).sum(), SOME_S)


@triton.jit
def km_by_package_helper(q_ptr, k_ptr, v_ptr, s_ptr, e_ptr, do_ptr, lse_ptr, delta_ptr, dk_ptr,
                         dv_ptr, ds_ptr, Q, K, Hq, Hkv, scale, D: tl.constexpr,
                         BM: tl.constexpr, BN: tl.constexpr):
    # A bypass: the package's keep test under an alias.
    j = tl.arange(0, BN)
    p = tl.arange(0, BM)
    package_keep_pairs(tl.zeros([BM, BN], tl.float32), j, j >= 0, p, e_ptr, 0, True, True, True)


def km_package_kernel():
    """A bypass: the package's backward kernel object passed as the learner's."""
    from dma_ref.kernels.backward import dma_bwd_kernel
    return dma_bwd_kernel
