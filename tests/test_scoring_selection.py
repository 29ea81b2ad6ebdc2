"""Selection by score: the top fraction by weight, and DataMan's per-domain token budgets in its three modes,
with upsampling when a domain runs short."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.selection import domain_budgets, fill_budget, top_fraction


def test_top_fraction_by_weight():
    scores = np.array([0.9, 0.1, 0.5, np.nan, 0.7])
    chars = np.array([100, 100, 300, 1000, 100])  # 1,600 in all; NaN's 1,000 count toward the total
    # best first: 0.9 (100), 0.7 (100), 0.5 (300): 10% of the valid 600 = 60 -> the first document reaches it
    assert top_fraction(scores, chars, 0.1).tolist() == [True, False, False, False, False]
    assert top_fraction(scores, chars, 1 / 3).tolist() == [True, False, False, False, True]  # 200 of 600
    assert top_fraction(scores, chars, 0.4).tolist() == [True, False, True, False, True]  # crosses 240 at 500
    assert top_fraction(scores, chars, 1.0).tolist() == [True, True, True, False, True]
    assert not top_fraction(scores, chars, 0.0).any()
    with pytest.raises(ValueError):
        top_fraction(scores, chars, 1.5)


def test_fill_budget_takes_the_best_then_upsamples():
    rng = np.random.default_rng(0)
    scores = np.array([1.0, 5.0, 3.0, 4.0, 2.0])
    tokens = np.array([10, 10, 10, 10, 10])
    assert fill_budget(scores, tokens, 25, 0.1, rng).tolist() == [1, 3, 2]  # best first until 25 tokens
    # 80 tokens from a domain of 50: all candidates within the margin, then redraws of them
    chosen = fill_budget(scores, tokens, 80, 0.1, rng)
    assert tokens[chosen].sum() >= 80 and tokens[chosen].sum() < 90 and set(chosen) == set(range(5))


def corpus():
    """Three domains with 600, 300 and 100 tokens; two sources; scores 1-5."""
    domains = np.array(["Coding"] * 6 + ["Law"] * 3 + ["Culture"] * 1, dtype=object)
    sources = np.array(["a", "b"] * 5, dtype=object)
    scores = np.array([5, 4, 3, 2, 1, 5, 5, 1, 4, 5], dtype=float)
    tokens = np.full(10, 100)
    return scores, tokens, domains, sources


def test_original_mode_follows_domain_shares():
    scores, tokens, domains, _ = corpus()
    counts = domain_budgets(scores, tokens, domains, budget=500, mode="original")
    by_domain = {d: int((counts * tokens)[domains == d].sum()) for d in ("Coding", "Law", "Culture")}
    assert by_domain == {"Coding": 300, "Law": 200, "Culture": 100}  # 60/30/10% of 500, rounded up to documents
    coding = np.flatnonzero(domains == "Coding")
    assert set(coding[counts[coding] > 0]) == {0, 1, 5}  # its three best (scores 5, 4, 5)
    assert counts.max() == 1


def test_equal_mode_upsamples_a_short_domain():
    scores, tokens, domains, _ = corpus()
    counts = domain_budgets(scores, tokens, domains, budget=600, mode="equal", seed=1)
    by_domain = {d: int((counts * tokens)[domains == d].sum()) for d in ("Coding", "Law", "Culture")}
    assert by_domain == {"Coding": 200, "Law": 200, "Culture": 200}
    assert counts[9] == 2  # Culture's one document drawn twice to fill 200 tokens


def test_multi_domain_splits_by_source_first():
    scores, tokens, domains, sources = corpus()
    counts = domain_budgets(scores, tokens, domains, budget=400, mode="multi_domain", sources=sources)
    # each source holds half the tokens -> 200 each, then split by the source's own domain shares, each budget
    # filled with whole documents: a = Coding 3/5 (120 -> 200) + Law 2/5 (80 -> 100);
    # b = Coding 3/5 (120 -> 200) + Law 1/5 (40 -> 100) + Culture 1/5 (40 -> 100)
    taken = {(s, d): int((counts * tokens)[(sources == s) & (domains == d)].sum())
             for s in "ab" for d in ("Coding", "Law", "Culture")}
    assert taken == {("a", "Coding"): 200, ("a", "Law"): 100, ("a", "Culture"): 0,
                     ("b", "Coding"): 200, ("b", "Law"): 100, ("b", "Culture"): 100}
    with pytest.raises(ValueError, match="source"):
        domain_budgets(scores, tokens, domains, budget=400, mode="multi_domain")


def test_min_score_keeps_only_the_top_rating():
    scores, tokens, domains, _ = corpus()
    counts = domain_budgets(scores, tokens, domains, budget=300, mode="original", min_score=5)
    assert set(np.flatnonzero(counts)) <= {0, 5, 6, 9}  # only Overall Score 5
    assert (counts * tokens).sum() >= 300
    with pytest.raises(ValueError, match="unknown mode"):
        domain_budgets(scores, tokens, domains, budget=300, mode="uniform")
