"""The checkers of notebooks 09 and 10 fail on the stub and on plausible wrong answers over
several seeds, and pass on the solved notebooks' solutions (``dma_ref.course.solutions``)."""

from __future__ import annotations

import torch
from checker_harness import checker_tests

from dma_ref.check import nb09, nb10
from dma_ref.course import solutions
from dma_ref.lab.tasks import ROLE_QUERY, ROLE_VALUE

S09, S10 = solutions("09"), solutions("10")


def query_accuracy_every_position(logits, targets):
    return (logits.argmax(-1) == targets).float().mean().item()


def first_blind_one_layer(num_pairs, window, n_layers):
    return 2 * num_pairs + (window - 1)                # forgets that layers chain


def first_blind_search(num_pairs, window, n_layers):    # the checker's own reachability walk
    N = 2 * num_pairs + n_layers * window + 4
    return next(p for p in range(N)
                if not nb09.reachable_from(N, window, n_layers, p)[:2 * num_pairs].any())


def pair_attention_every_row(probs, roles):
    return probs[:, roles <= ROLE_VALUE].sum(-1).mean().item()


def pair_attention_package(probs, roles):               # the explorer's own row summary
    from dma_ref.viz.learned import query_view
    view = {"mask": probs > 0, "probs": probs}
    rows = (roles == ROLE_QUERY).nonzero().flatten().tolist()
    return sum(query_view(view, roles, p)["pair_attention"] for p in rows) / len(rows)


def survivors_package(s, window):                       # the package's lifetimes
    from dma_ref import key_lifetimes
    return key_lifetimes(s[None, None], window)[0, 0] == len(s)


def survivors_sliding_window(s, window):
    out = torch.zeros(len(s), dtype=torch.bool)
    out[-window:] = True
    return out


def survivors_topk(s, window):                         # no tie rule: torch.topk's order
    out = torch.zeros(len(s), dtype=torch.bool)
    out[torch.topk(s, min(window, len(s))).indices] = True
    return out


def survivors_earlier_wins(s, window):
    order = sorted(range(len(s)), key=lambda j: (float(s[j]), -j), reverse=True)[:window]
    out = torch.zeros(len(s), dtype=torch.bool)
    out[order] = True
    return out


CASES = [
    (nb09.check_query_accuracy, S09.query_accuracy, [query_accuracy_every_position]),
    (nb09.check_first_blind_query, S09.first_blind_query, [first_blind_one_layer, first_blind_search]),
    (nb10.check_pair_attention, S10.pair_attention, [pair_attention_every_row, pair_attention_package]),
    (nb10.check_survivors, S10.survivors, [survivors_sliding_window, survivors_topk,
                                           survivors_earlier_wins, survivors_package]),
]
test_stub_fails, test_wrong_answers_fail, test_correct_solution_passes = checker_tests(CASES)
