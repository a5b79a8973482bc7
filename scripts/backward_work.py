"""Work of a key-major DMA backward against today's query-major one, from real lifetimes (CPU).

    python scripts/backward_work.py [N ...] [--w 1024] [--bq 32] [--bn 64]

A key-major pass gives each program a tile of keys and visits every query row that keeps one of
them: for keys ``j0 .. j0 + BN - 1`` the rows ``[j0, max e_j)`` (row mode: key j is kept by the
positions ``[j, e_j)``). It pays ``BN x (max e_j - j0)`` pairs per tile; the query-major pass pays
``BQ x (|list| + BQ)`` per query block. Scores N(0, 1), one head, ``dma_ref.key_lifetimes``.
Printed: the kept pairs, each pass's pairs and their ratio to the kept pairs, for consecutive
key tiles and for tiles of the long-lived keys alone (``e_j > j + 1``, compacted in position
order; the others only meet their diagonal block).
"""

from __future__ import annotations

import argparse

import torch

from dma_ref import key_lifetimes


def work(N: int, w: int, BQ: int, BN: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    e = key_lifetimes(torch.randn(1, 1, N, generator=g), w)[0, 0]
    j = torch.arange(N)
    kept = int((e - j).sum())
    p0 = torch.arange(0, N, BQ)
    # |{j < p0 : e_j > p0}| per block, from the sorted lifetimes of the keys before p0
    lists = torch.stack([((j < p) & (e > p)).sum() for p in p0.tolist()])
    query_major = int((lists + BQ).sum()) * BQ
    consecutive = sum(BN * int(e[a:a + BN].max() - a) for a in range(0, N, BN))
    long = j[e > j + 1]
    compacted = sum(BN * int(e[long[a:a + BN]].max() - long[a]) for a in range(0, len(long), BN))
    return {"kept": kept, "query_major": query_major, "key_major": consecutive,
            "key_major_long_lived": compacted}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("n", type=int, nargs="*", default=[16384, 65536])
    p.add_argument("--w", type=int, nargs="+", default=[256, 1024])
    p.add_argument("--bq", type=int, default=32)
    p.add_argument("--bn", type=int, default=64)
    args = p.parse_args()
    for N in args.n:
        for w in args.w:
            r = work(N, w, args.bq, args.bn)
            print(f"N={N} w={w}: kept pairs {r['kept']:.3e}; " + "; ".join(
                f"{k} {v:.3e} ({v / r['kept']:.2f}x)" for k, v in r.items() if k != "kept"),
                flush=True)


if __name__ == "__main__":
    main()
