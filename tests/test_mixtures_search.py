"""CLIMB's iterative search on an objective with a known optimum (no proxies: the loop itself)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mixtures.sampler import MixtureSampler
from mixtures.search import IterativeSearch, propose

TOKENS = {"web": 50, "code": 25, "books": 15, "math": 7, "legal": 3}
OPTIMUM = np.array([0.15, 0.45, 0.1, 0.25, 0.05])


def loss(mixtures: pd.DataFrame) -> np.ndarray:
    return 2.0 + 3.0 * np.sqrt(((mixtures.to_numpy() - OPTIMUM) ** 2).sum(axis=1))


def evaluate(proposals: pd.DataFrame, round_index: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return proposals, pd.DataFrame({"target_val_loss": loss(proposals)}, index=proposals.index)


@pytest.fixture(scope="module")
def searched():
    sampler = MixtureSampler.from_token_counts(TOKENS, seed=11)
    search = IterativeSearch(sampler, evaluate, ["target_val_loss"], rounds=(48, 24, 12), n_candidates=20_000,
                             top_k=32, seed=11)
    return search, search.run()


def test_rounds_have_the_configured_sizes(searched):
    search, result = searched
    assert [len(r) for r in result.rounds] == [48, 24, 12]
    assert result.rounds[1][0] == "r1-000" and len(result.mixtures) == 84
    assert result.mixtures.index.is_unique and list(result.metrics.index) == list(result.mixtures.index)
    assert search.model == "lightgbm_climb" and search.final == "best"  # CLIMB's predictor and final pick


def test_later_rounds_come_from_the_predicted_best(searched):
    _, result = searched
    by_round = [result.metrics.loc[r, "target_val_loss"].median() for r in result.rounds]
    assert by_round[2] < by_round[1] < by_round[0]
    assert result.metrics.loc[result.rounds[2], "target_val_loss"].max() < by_round[0]


def test_best_mixture_is_near_the_optimum(searched):
    _, result = searched
    best = result.best.to_numpy()
    assert best.sum() == pytest.approx(1.0)
    first_round = result.mixtures.loc[result.rounds[0]]
    assert loss(result.best.to_frame().T)[0] < loss(first_round).min()
    assert np.abs(best - OPTIMUM).sum() < 0.25


def test_proposals_skip_mixtures_already_run(searched):
    search, result = searched
    again = propose(search.sampler, 200, 3, regressor=result.regressor, evaluated=result.mixtures,
                    n_candidates=20_000, seed=11)
    grid = {tuple(row) for row in np.round(result.mixtures.to_numpy() / 2e-4).astype(int)}
    assert not any(tuple(row) in grid for row in np.round(again.to_numpy() / 2e-4).astype(int))
    assert len(again) == 200  # drawn from the top max(200^2, 128) = 40,000 > 20,000 candidates: all of them


def test_bad_rounds_are_refused():
    with pytest.raises(ValueError, match="rounds must be positive"):
        IterativeSearch(MixtureSampler.from_token_counts(TOKENS), evaluate, ["target_val_loss"], rounds=(8, 0))
