"""Independent training runs, one after another or in worker processes (``--jobs``).

Each run is a picklable call ``fn(*args)``; with ``jobs > 1`` the runs go to a pool of
``jobs`` spawned processes, each with ``threads`` torch CPU threads (default 1: several
processes with several threads each oversubscribe the cores and run slower than one at a time).
Results come back as runs finish, so the caller can save its record after each one.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import time
from collections.abc import Callable, Iterator, Sequence

import torch


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def map_runs(fn: Callable, calls: Sequence[tuple], *, jobs: int = 1, threads: int | None = None,
             desc: str = "", progress: bool = True) -> Iterator[tuple[int, object]]:
    """Yield ``(i, fn(*calls[i]))`` for every call, in finishing order. ``jobs == 1`` runs them
    here, in order (the runs' own progress bars stay); ``jobs > 1`` in worker processes, with one
    bar counting finished runs. A run that raises re-raises here, naming its call."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if jobs == 1 or len(calls) <= 1:
        for i, args in enumerate(calls):
            yield i, fn(*args)
        return
    from tqdm.auto import tqdm

    ctx = multiprocessing.get_context("spawn")     # no fork of a process holding torch threads
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(threads or 1,)) as pool:
        futures = {pool.submit(fn, *args): i for i, args in enumerate(calls)}
        with tqdm(total=len(calls), desc=desc, disable=not progress) as bar:
            for fut in cf.as_completed(futures):
                i = futures[fut]
                try:
                    result = fut.result()
                except Exception as exc:
                    for other in futures:
                        other.cancel()
                    raise RuntimeError(f"{desc} run {i} ({calls[i]!r:.200}) failed: {exc}") from exc
                bar.update()
                yield i, result


def run_methods(record: dict, fn: Callable, calls: Sequence[tuple], keys: Sequence[str | tuple],
                *, out, jobs: int, threads: int | None, progress: bool) -> dict:
    """Fill ``record["results"][keys[i]] = fn(*calls[i])`` (a tuple key is a path into nested
    dicts: ``("dma", "N128_P16_d64_w8")``) run by run (``map_runs``), saving the record after
    each with ``wall_seconds`` (elapsed, summed over resumed sessions), ``run_seconds`` (the
    runs' own training seconds, summed: their cost on one core) and ``jobs``."""
    from .records import save_record

    wall0, t0 = record["wall_seconds"], time.perf_counter()
    for i, entry in map_runs(fn, calls, jobs=jobs, threads=threads,
                             desc=record["experiment"], progress=progress):
        *outer, last = keys[i] if isinstance(keys[i], tuple) else (keys[i],)
        node = record["results"]
        for k in outer:
            node = node.setdefault(k, {})
        node[last] = entry
        record["wall_seconds"] = wall0 + time.perf_counter() - t0
        record["run_seconds"] = sum(run_seconds(e) for e in record["results"].values())
        record["jobs"] = jobs
        save_record(record, out)
    return record


def run_seconds(entry: dict) -> float:
    """The ``seconds`` of a result entry, or of every entry nested below it."""
    if "seconds" in entry:
        return float(entry["seconds"])
    return sum(run_seconds(e) for e in entry.values() if isinstance(e, dict))
