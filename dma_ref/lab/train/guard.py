"""Stop a training run at the first non-finite loss or gradient, say why, keep the last good weights.

The paper's score form ``s = exp(A * softplus(x))`` overflows float32 (and bfloat16) once
``A * softplus(x) > ln(3.4e38) ~ 88.7``; an infinite bias makes the softmax of every row that
keeps the key NaN, and one optimizer step later every parameter is NaN. The loop checks the loss
and the gradient norm after each backward, before the optimizer step, so the parameters are
still those of the last good step when :class:`TrainingDiverged` is raised. On CUDA that check
is one host synchronisation per step. (On the CPU the naive attention already refuses +inf
scores with a ValueError during the forward; the loop turns that into the same error.)
"""

from __future__ import annotations

import torch

from ...nn import TinyLM
from ...scores import EXP_OVERFLOW, score_exponent


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient at ``step``. ``causes``: what :func:`diagnose` found, one
    line per layer or parameter; ``last_good``: the model's state dict (CPU copies) before the
    update of ``step``, to save as the last good checkpoint; ``curve`` and ``loss_curve``: the
    run's evaluations so far (``[[step, value], ...]``, as ``train`` returns them)."""

    def __init__(self, step: int, causes: list[str], last_good: dict[str, torch.Tensor], *,
                 curve: list | None = None, loss_curve: list | None = None):
        self.step, self.causes, self.last_good = step, causes, last_good
        self.curve, self.loss_curve = curve or [], loss_curve or []
        super().__init__(f"training diverged at step {step}: " + "; ".join(causes))


def is_finite(loss: torch.Tensor, grad_norm: torch.Tensor) -> bool:
    """Whether the loss and the total gradient norm are finite (one host sync)."""
    return bool(torch.isfinite(loss.detach().float() + grad_norm.float()))


@torch.no_grad()
def diagnose(model: TinyLM, inputs: torch.Tensor) -> list[str]:
    """Why the step on ``inputs`` (int64 ``[B, N]``) went non-finite: the first layer whose DMA
    scores overflow (with the largest exponent ``A * softplus(x)``) or whose projections are
    not finite, then the parameters whose gradients are not finite. Empty when nothing is
    found. Walks the blocks one by one without gradients, stopping at the first bad layer (the
    attention itself may refuse non-finite scores)."""
    causes = []
    h = model.embed(inputs)
    for i, block in enumerate(model.blocks):
        attn = block.attn
        where = f"layer {i} (blocks.{i}.attn)"
        q, k, v, s = attn.project(block.norm1(h))
        if s is not None:
            a = score_exponent(v.float(), attn.delta.float(), attn.A.float())
            a_max = float(a.max())
            if attn.form == "exp" and a_max > EXP_OVERFLOW:
                causes.append(
                    f"{where}: DMA scores overflow: form='exp' computes s = exp(A*softplus(x)) "
                    f"with A*softplus(x) up to {a_max:.1f} > {EXP_OVERFLOW:.1f} (float32's "
                    f"limit), so s = inf and the softmax gives NaN (A = "
                    f"{[round(x, 2) for x in attn.A.tolist()]}); use form='log' (the official "
                    f"code's fix) or a lower dma_lr_mult")
            elif not torch.isfinite(s).all():
                causes.append(f"{where}: non-finite DMA scores s (largest exponent {a_max:.1f})")
        causes += [f"{where}: non-finite {name}" for name, t in (("q", q), ("k", k), ("v", v))
                   if not torch.isfinite(t).all()]
        if causes:
            break
        h = block(h)
    bad_grads = [n for n, p in model.named_parameters()
                 if p.grad is not None and not torch.isfinite(p.grad).all()]
    if bad_grads:
        causes.append(f"non-finite gradients in {', '.join(bad_grads[:6])}"
                      + (f" and {len(bad_grads) - 6} more" if len(bad_grads) > 6 else ""))
    return causes


def last_good_state(model: TinyLM) -> dict[str, torch.Tensor]:
    """CPU copies of the model's state dict (the parameters before the failing update)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
