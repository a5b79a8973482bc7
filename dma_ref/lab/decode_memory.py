"""KV-cache memory per token of context on the CPU, measured: DMA's bounded cache vs MHA's full one.

    python -m dma_ref.lab.decode_memory [--out figures/decoding/cpu_memory.json]

A tiny model of each kind (same sizes, random weights) prefills contexts of growing length in
chunks and then decodes one token; after that the cache's tensors are measured two ways: the
bytes of the storages it holds (``untyped_storage().nbytes()``, what the allocator handed out,
empty slots included) and the growth of the process's resident memory (RSS, from
``/proc/self/statm``; noisy, allocator-dependent, reported as is). The record holds the command
that produced it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from ..nn import ModelConfig, TinyLM
from ..nn.generate import forward_cached, new_cache
from ..paths import FIGURES

CONTEXTS = (256, 1024, 4096, 16384)


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc/self/statm``); 0 elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * os.sysconf("SC_PAGE_SIZE")


def held_bytes(cache) -> int:
    """Bytes of the distinct storages behind the cache's tensors (measured, not computed)."""
    seen = {}
    for st in cache.layers:
        for t in st.tensors():
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())


@torch.no_grad()
def measure(attn: str, context: int, *, window: int = 64, chunk: int = 256, seed: int = 0) -> dict:
    cfg = ModelConfig(vocab_size=64, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2,
                      attn=attn, window=window, backend="sdpa")
    torch.manual_seed(seed)
    model = TinyLM(cfg).eval()
    tokens = torch.randint(0, cfg.vocab_size, (1, context + 1))
    gc.collect()
    before = rss_bytes()
    cache = new_cache(model)
    for piece in tokens[:, :context].split(chunk, dim=1):
        forward_cached(model, piece, cache)
    forward_cached(model, tokens[:, context:], cache)          # one decode step
    gc.collect()
    record = {"attn": attn, "context": context + 1, "window": window,
              "kv_bytes": cache.kv_bytes(), "held_bytes": held_bytes(cache),
              "rss_growth_bytes": rss_bytes() - before,
              "keys_per_head": int(cache.lengths(0).max())}
    record["held_bytes_per_token"] = record["held_bytes"] / record["context"]
    return record


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FIGURES / "decoding" / "cpu_memory.json")
    parser.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    parser.add_argument("--window", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    rows = [measure(attn, n, window=args.window)
            for attn, n in tqdm([(a, n) for a in ("mha", "dma") for n in args.contexts])]
    out = {"command": "python -m dma_ref.lab.decode_memory " + " ".join(argv or sys.argv[1:]),
           "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
           "model": "TinyLM d_model=64, 2 layers, 4 query heads, 2 KV heads, D=16, fp32",
           "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
