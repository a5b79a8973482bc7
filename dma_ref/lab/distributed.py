"""Data-parallel plumbing for ``dma_ref.lab.train``: one process per GPU (or CPU worker) of one host.

    torchrun --nproc_per_node=2 -m dma_ref.lab.train --compare --preset gpu --device cuda ...

``torchrun`` starts the processes and sets ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_distributed` reads them. With
``WORLD_SIZE`` unset or 1 nothing is initialised and :class:`DistContext` describes a single
process, so the training code runs exactly as without torchrun. The backend is NCCL for CUDA
devices and gloo for the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

# Set before init_process_group: NVLink multicast off in NCCL, PyTorch and NVSHMEM.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
                 "NVSHMEM_DISABLE_NVLS": "1"}


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in a data-parallel run.

    world_size: number of processes W; rank: this process, ``0 .. W-1`` (rank 0 writes files and
    shows progress); local_rank: its index on this host (its GPU); device: the device it trains
    on (``cuda:local_rank`` under NCCL); backend: ``"nccl"``, ``"gloo"`` or None (single process).
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """True on the rank that writes results, checkpoints and the progress bar."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when gradients and metrics are reduced over W > 1 processes."""
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` (any shape, on this rank's device) over all ranks, in place; a no-op for
        one process. Every rank must call it at the same point (it is a collective)."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t


def world_size_from_env() -> int:
    """``WORLD_SIZE`` as torchrun sets it (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str | torch.device | None = None) -> DistContext:
    """Join the process group torchrun describes, or describe a single process.

    device: ``"cuda"`` or ``"cpu"`` (None: CUDA when available). Under torchrun with CUDA each
    process takes GPU ``LOCAL_RANK`` and NCCL; on the CPU, gloo. Returns the :class:`DistContext`.
    Call :func:`shutdown` at the end (also after an error, or the other ranks hang).
    """
    dev = torch.device(device if device is not None else
                       ("cuda" if torch.cuda.is_available() else "cpu"))
    W = world_size_from_env()
    if W <= 1:
        return DistContext(device=dev)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    # NVLink multicast (NVLS) stays off, before NCCL reads its settings: on the shared
    # multi-GPU hosts this project runs on, a program using it can put the host's GPUs out of
    # service for everyone, so an environment that turns it on is overridden.
    os.environ.update(MULTICAST_OFF)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if backend == "nccl" else {}   # binds NCCL to this GPU
        dist.init_process_group(backend, rank=rank, world_size=W, **kwargs)
    return DistContext(W, rank, local_rank, dev, backend)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (``destroy_process_group``) if this process joined one."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
