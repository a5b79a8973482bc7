"""Checkpoints of the tiny model: ``{"config": ModelConfig as a dict, "state_dict", **extra}``."""

from __future__ import annotations

from pathlib import Path

import torch

from .attention import DMAAttention, backend_for
from .model import ModelConfig, TinyLM

# The trained DMA model shipped with the package (notebook 10); made by
# ``python -m dma_ref.lab.train --compare --checkpoint ...``.
CHECKPOINT = Path(__file__).resolve().parents[1] / "data" / "mqar_dma.pt"


def save_checkpoint(model: TinyLM, path: str | Path, extra: dict | None = None) -> None:
    """``torch.save({"config", "state_dict", **extra})`` (float32 CPU tensors)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"config": model.cfg.to_dict(), "state_dict": state, **(extra or {})}, path)


def load_checkpoint(path: str | Path, device: torch.device | str | None = None) -> tuple[TinyLM, dict]:
    """``(model in eval mode, the checkpoint dict)``; DMA's backend follows the device."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    model = TinyLM(ModelConfig(**{**ckpt["config"], "backend": "auto"}))
    model.load_state_dict(ckpt["state_dict"])
    if device is not None:
        model = model.to(device)
        for block in model.blocks:
            if isinstance(block.attn, DMAAttention):
                block.attn.backend = backend_for(device)
    return model.eval(), ckpt
