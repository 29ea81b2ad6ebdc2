"""Choosing documents by score: a top fraction of the corpus, or DataMan's per-domain token budgets.

`top_fraction` is PreSelect's and DCLM's rule: rank by score and keep the best documents until they
hold the fraction of the corpus's characters or tokens. `domain_budgets` follows DataMan's
`select_subset.py` (pengr/DataMan): optionally keep only documents whose score reaches `min_score`
(DataMan keeps Overall Score 5), then fill a token budget per domain: in proportion to each domain's
tokens (`original`), the same for every domain (`equal`), or per source first and then per domain
inside each source (`multi_domain`). Inside a domain the best-scored documents come first among at
most ceil(n * (budget / domain tokens + margin)) candidates; a domain too small for its budget is
upsampled by drawing its candidates again at random. The result is a count per document, so a
document drawn twice is written once with `repeats` 2.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Mode = Literal["multi_domain", "original", "equal"]
MODES: tuple[str, ...] = ("multi_domain", "original", "equal")


def top_fraction(scores: np.ndarray, weights: np.ndarray, fraction: float) -> np.ndarray:
    """Boolean mask of the best documents holding `fraction` of the total weight (NaN scores never kept).

    Documents are taken best first until their weight reaches the target; the one that crosses it is kept.
    Ties keep input order.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    keep = np.zeros(len(scores), dtype=bool)
    valid = np.flatnonzero(~np.isnan(scores))
    if fraction == 0.0 or len(valid) == 0:
        return keep
    order = valid[np.argsort(-scores[valid], kind="stable")]
    cumulative = np.cumsum(weights[order])
    target = fraction * weights[valid].sum()
    n_keep = min(len(order), int(np.searchsorted(cumulative, target, side="left")) + 1)
    keep[order[:n_keep]] = True
    return keep


def fill_budget(scores: np.ndarray, tokens: np.ndarray, budget: int, margin: float,
                rng: np.random.Generator) -> np.ndarray:
    """Local indices filling `budget` tokens best first (DataMan's `percentile_indices`), with repeats if short."""
    if budget <= 0 or len(scores) == 0 or tokens.sum() <= 0:
        return np.zeros(0, dtype=np.int64)
    if np.unique(scores).size == 1:
        order = rng.permutation(len(scores))
    else:
        order = np.lexsort((rng.random(len(scores)), -scores))  # best first, ties at random
    limit = math.ceil(len(scores) * (budget / tokens.sum() + margin))
    chosen = order[:limit]
    cumulative = np.cumsum(tokens[chosen])
    while cumulative[-1] < budget:
        shortfall = budget - cumulative[-1]
        extra = rng.choice(chosen, size=max(1, math.ceil(shortfall / tokens[chosen].mean())), replace=True)
        chosen = np.concatenate([chosen, extra])
        cumulative = np.cumsum(tokens[chosen])
    cutoff = int(np.argmax(cumulative >= budget))
    return chosen[: cutoff + 1]


def _by_domain(scores: np.ndarray, tokens: np.ndarray, domains: np.ndarray, budget: int, mode: str, margin: float,
               rng: np.random.Generator) -> np.ndarray:
    names = np.unique(domains)
    total = tokens.sum()
    picked = []
    for name in names:
        members = np.flatnonzero(domains == name)
        share = tokens[members].sum() / total if mode == "original" else 1.0 / len(names)
        local = fill_budget(scores[members], tokens[members], int(share * budget), margin, rng)
        picked.append(members[local])
    return np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)


def domain_budgets(scores: np.ndarray, tokens: np.ndarray, domains: np.ndarray, budget: int, mode: Mode = "original",
                   sources: np.ndarray | None = None, margin: float = 0.1, min_score: float | None = None,
                   seed: int = 0) -> np.ndarray:
    """How many times each document is selected (int array, 0 = not selected) for a `budget`-token subset."""
    if mode not in MODES:
        raise ValueError(f"unknown mode '{mode}' (choose from {', '.join(MODES)})")
    scores = np.asarray(scores, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.int64)
    domains = np.asarray(domains, dtype=object)
    rng = np.random.default_rng(seed)
    eligible = ~np.isnan(scores) & (tokens > 0)
    if min_score is not None:
        eligible &= scores >= min_score
    pool = np.flatnonzero(eligible)
    counts = np.zeros(len(scores), dtype=np.int64)
    if len(pool) == 0:
        return counts
    if mode == "multi_domain":
        if sources is None:
            raise ValueError("multi_domain mode needs each document's source")
        sources = np.asarray(sources, dtype=object)[pool]
        total = tokens[pool].sum()
        picked = []
        for source in np.unique(sources):
            members = pool[sources == source]
            source_budget = int(tokens[members].sum() / total * budget)
            local = _by_domain(scores[members], tokens[members], domains[members], source_budget, "original",
                               margin, rng)
            picked.append(members[local])
        chosen = np.concatenate(picked)
    else:
        chosen = pool[_by_domain(scores[pool], tokens[pool], domains[pool], budget, mode, margin, rng)]
    np.add.at(counts, chosen, 1)
    return counts
