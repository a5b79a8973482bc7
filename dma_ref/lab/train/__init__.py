"""Training tiny MHA / sliding-window / DMA language models on MQAR, and comparing them.

    python -m dma_ref.lab.train --compare --out figures/mqar --checkpoint dma_ref/data/mqar_dma.pt
    torchrun --nproc_per_node=2 -m dma_ref.lab.train --compare --preset gpu --device cuda ...

(``python -m dma_ref.lab.train --help`` lists the options and the outputs.) Modules: ``config``
(TrainConfig, GPU_PRESET, the training data streams), ``loop`` (``train`` and its schedules,
loss and accuracy), ``timing`` (the share of the step spent in attention), ``compare``
(``run_comparison`` and its result files), ``__main__`` (the command line).
"""

from .compare import format_comparison, run_comparison
from .config import GPU_PRESET, TrainConfig
from .loop import accuracy, lm_loss, train, window_at

__all__ = [
    "GPU_PRESET",
    "TrainConfig",
    "accuracy",
    "format_comparison",
    "lm_loss",
    "run_comparison",
    "train",
    "window_at",
]
