"""The paper's comparison (arXiv 2508.02124, Section 5) at CPU scale: MHA, SWA, MLA, NSA and DMA
trained alike on three experiments, each recorded under ``figures/paper/``.

    python -m dma_ref.lab.paper [mqar|perplexity|passkey|all] [--resume] [--smoke]

Modules: ``records`` (the methods, the JSON records, versions, resume), ``sizing`` (equal
parameters, FLOPs per token), ``fit`` (one training loop for token streams), ``perplexity``
(byte-level LM on CPython's ``pydoc_data.topics``), ``passkey`` (a digit string in filler, asked
at the end; length x depth grid), ``mqar`` (the MQAR grid on the lab's recipe), ``__main__``.
"""

from .records import METHODS, PAPER_DIR, load_record

__all__ = ["METHODS", "PAPER_DIR", "load_record"]
