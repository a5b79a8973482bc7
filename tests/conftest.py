"""Test-session setup and the independent brute-force references shared by the test files.

* Without CUDA, ``TRITON_INTERPRET=1`` is set here, at import time: pytest imports this file
  before any test module, hence before anything defines a ``@triton.jit`` kernel (after that
  the interpreter can no longer be switched on).
* ``@pytest.mark.gpu`` tests are skipped without CUDA.
* ``@pytest.mark.browser`` tests are skipped when Debian's chromium is missing, except in CI
  (``CI=true``), where a missing browser is a failure: CI must prove the browser test runs.
* Randomness is fresh on every run and replayable: one session seed is drawn (or read from
  ``DMA_REF_TEST_SEED``) and printed in pytest's header; before each test, torch's, NumPy's and
  Python's global generators are seeded from it and the test's node id (``seed_of_test``), and so is
  hypothesis. A failing test's report names both seeds; ``DMA_REF_TEST_SEED=<seed> make test``
  replays the run. Tests that want an explicit generator take the ``rng`` fixture.

The references below are written from DESIGN.md section 3 in plain Python loops, on purpose
sharing no code with ``dma_ref``; tests reach them through the ``ref`` fixture.
"""

from __future__ import annotations

import math
import os
import random
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

CHROMIUM = "/usr/bin/chromium"
SEED_ENV = "DMA_REF_TEST_SEED"


def session_seed() -> int:
    """The run's seed: ``$DMA_REF_TEST_SEED`` when set (a replay), else drawn once per run."""
    given = os.environ.get(SEED_ENV, "").strip()
    if given:
        return int(given)
    seed = int.from_bytes(os.urandom(4), "little")
    os.environ[SEED_ENV] = str(seed)          # subprocesses (notebooks, torchrun) see the same
    return seed


SESSION_SEED = session_seed()


def seed_of_test(nodeid: str) -> int:
    """The seed of one test: the session seed mixed with a stable hash of its node id (so a
    test's inputs do not depend on which other tests ran before it)."""
    return (SESSION_SEED * 1_000_003 + zlib.crc32(nodeid.encode())) % 2**32


def pytest_report_header(config):
    return f"random seed: {SEED_ENV}={SESSION_SEED} (set it to replay this run)"


def pytest_configure(config):
    try:                                       # hypothesis draws its examples from the same seed
        from hypothesis import core
    except ImportError:
        return
    if config.getoption("hypothesis_seed", None) is None:
        core.global_force_seed = SESSION_SEED


@pytest.fixture(autouse=True)
def _seed_everything(request):
    seed = seed_of_test(request.node.nodeid)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    yield


@pytest.fixture
def rng(request) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with this test's seed."""
    return torch.Generator().manual_seed(seed_of_test(request.node.nodeid))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        seed = seed_of_test(item.nodeid)
        replay = f"{SEED_ENV}={SESSION_SEED} pytest '{item.nodeid}'"
        message = f"{SEED_ENV}={SESSION_SEED} (test seed {seed}); replay: {replay}"
        report.sections.append(("random seed", message))


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    has_chromium = os.path.exists(CHROMIUM)
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_browser = pytest.mark.skip(reason=f"needs Debian chromium at {CHROMIUM} (make test installs it)")
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "browser" in item.keywords and not has_chromium and not in_ci():
            item.add_marker(skip_browser)


def pytest_runtest_setup(item):
    if "browser" in item.keywords and in_ci() and not os.path.exists(CHROMIUM):
        pytest.fail(f"CI=true but {CHROMIUM} is missing: the browser test must run in CI "
                    "(make test installs chromium with apt-get)", pytrace=False)


# ---------------------------------------------------------------- brute-force references


def best_keys(scores: list[float], candidates, n: int) -> set[int]:
    """The ``n`` best keys among ``candidates`` by ``(s_j, j)`` descending (later key wins ties)."""
    ranked = sorted(candidates, key=lambda j: (scores[j], j), reverse=True)
    return set(ranked[:n])


def mask_rows(scores: list[float], w: int, q_len=None, causal=True, mode="row") -> list[list[bool]]:
    """One head's mask as ``Q`` lists of ``K`` bools, straight from DESIGN.md section 3.2."""
    K = len(scores)
    Q = K if q_len is None else q_len
    top_all = best_keys(scores, range(K), w)
    rows = []
    for i in range(Q):
        p = K - Q + i                                   # bottom-right aligned position
        if mode == "global":
            kept = {j for j in top_all if j <= p or not causal}
        elif causal:
            kept = best_keys(scores, range(p + 1), w)   # min(w, p + 1) keys among j <= p
        else:
            kept = top_all
        rows.append([j in kept for j in range(K)])
    return rows


def brute_mask(s: torch.Tensor, w: int, q_len=None, causal=True, mode="row") -> torch.Tensor:
    """bool ``[B, Hkv, Q, K]`` for scores ``s [B, Hkv, K]``, head by head, row by row."""
    B, H, K = s.shape
    out = [[mask_rows(s[b, h].double().tolist(), w, q_len, causal, mode) for h in range(H)]
           for b in range(B)]
    Q = K if q_len is None else q_len
    return torch.tensor(out, dtype=torch.bool).reshape(B, H, Q, K)


def lifetimes_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """int64 ``[B, H, K]`` from a full causal mask ``[B, H, K, K]``: e_j = first p >= j not
    keeping j (K if every p >= j keeps it)."""
    B, H, Q, K = mask.shape
    assert Q == K
    e = torch.full((B, H, K), K, dtype=torch.int64)
    for b in range(B):
        for h in range(H):
            for j in range(K):
                for p in range(j, K):
                    if not mask[b, h, p, j]:
                        e[b, h, j] = p
                        break
    return e


def loop_attention(q, k, v, s, keep, scale=None):
    """float64 DMA attention with explicit loops: ``(o [B, Hq, Q, D], lse [B, Hq, Q])``.

    keep is the bool mask ``[B, Hkv, Q, K]`` (query head h reads KV head h // G). Empty rows
    give o = 0 and lse = -inf.
    """
    B, Hq, Q, D = q.shape
    Hkv, K = k.shape[1], k.shape[2]
    G = Hq // Hkv
    scale = D**-0.5 if scale is None else scale
    q, k, v, s = (t.detach().double() for t in (q, k, v, s))
    o = torch.zeros(B, Hq, Q, D, dtype=torch.float64)
    lse = torch.full((B, Hq, Q), -math.inf, dtype=torch.float64)
    for b in range(B):
        for h in range(Hq):
            g = h // G
            for i in range(Q):
                kept = [j for j in range(K) if keep[b, g, i, j]]
                logits = [scale * float(q[b, h, i] @ k[b, g, j]) + float(s[b, g, j]) for j in kept]
                if not kept or max(logits) == -math.inf:
                    continue
                m = max(logits)
                weights = [math.exp(x - m) for x in logits]
                total = sum(weights)
                lse[b, h, i] = m + math.log(total)
                for j, wt in zip(kept, weights):
                    o[b, h, i] += (wt / total) * v[b, g, j]
    return o, lse


@pytest.fixture(scope="session")
def ref():
    """The brute-force references: ``ref.mask``, ``ref.lifetimes``, ``ref.attention`` ..."""
    return SimpleNamespace(mask=brute_mask, mask_rows=mask_rows, best_keys=best_keys,
                           lifetimes=lifetimes_from_mask, attention=loop_attention)
