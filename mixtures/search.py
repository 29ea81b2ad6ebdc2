"""Iterative mixture search (CLIMB), of which RegMix is the one-round case.

Round 1 samples mixtures from the prior (RegMix's sampler) and evaluates them (proxies, or any
callable returning metrics). After each round a predictor is fitted on every run so far; the next
round of k mixtures is drawn at random from the top max(k^2, 128) of `n_candidates` sampler draws
ranked by the predictor, skipping mixtures already run. CLIMB's paper used rounds of 64, 32 and
16 proxies and LightGBM with lr 0.01, L1 = L2 = 1, max_depth 4, min_child_samples 5, early stopping on
a 10% split (`lightgbm_climb`, NeMo Curator's 8_predict.py). The result is CLIMB's single best-predicted
candidate (`final="best"`) or RegMix's mean of the top_k (`final="top_k_mean"`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mixtures.regression import RegMixRegressor
from mixtures.sampler import MixtureSampler

# (proposed mixtures, round index) -> (mixtures actually trained, their metrics), both indexed by run.
# The trained mixture can differ from the proposal, e.g. when the repetition cap shortened a domain.
Evaluate = Callable[[pd.DataFrame, int], tuple[pd.DataFrame, pd.DataFrame]]


def propose(sampler: MixtureSampler, k: int, round_index: int, *, regressor: RegMixRegressor | None = None,
            evaluated: pd.DataFrame | None = None, n_candidates: int = 100_000, target: str | None = None,
            seed: int = 0, upper: np.ndarray | None = None) -> pd.DataFrame:
    """k new mixtures named r<round>-<i>: from the prior without a regressor, else from its top max(k^2, 128)."""
    if regressor is None:
        proposals = sampler.sample(k).to_numpy()
    else:
        # spiky draws repeat (one-hot mixtures especially): the pool is the best max(k^2, 128) *distinct*
        # mixtures not run yet
        ranked, _ = regressor.rank(sampler.candidates(n_candidates), keep=n_candidates, target=target, upper=upper)
        seen = set() if evaluated is None else {row.tobytes() for row in sampler.on_grid(evaluated[sampler.domains])}
        pool = []
        for row, key in zip(ranked, sampler.on_grid(ranked), strict=True):
            if key.tobytes() not in seen:
                seen.add(key.tobytes())
                pool.append(row)
                if len(pool) == max(k * k, 128):
                    break
        if not pool:
            raise ValueError(f"round {round_index}: every candidate mixture has been run already")
        rng = np.random.default_rng([seed, round_index])
        proposals = np.array(pool)[rng.choice(len(pool), size=min(k, len(pool)), replace=False)]
    runs = pd.Index([f"r{round_index}-{i:03d}" for i in range(len(proposals))], name="run")
    return pd.DataFrame(proposals, index=runs, columns=sampler.domains)


def fit_predictor(mixtures: pd.DataFrame, metrics: pd.DataFrame, targets: Sequence[str], *,
                  model: str = "lightgbm", params: dict | None = None, num_threads: int = 2,
                  directions: dict[str, str] | None = None) -> RegMixRegressor:
    missing = [t for t in targets if t not in metrics.columns]
    if missing:
        raise ValueError(f"targets not among the metrics: {', '.join(missing)}; metrics: {', '.join(metrics.columns)}")
    return RegMixRegressor(model, params, num_threads, directions=directions).fit(
        mixtures, metrics.loc[mixtures.index, list(targets)])


@dataclass
class SearchResult:
    mixtures: pd.DataFrame  # every run's mixture, index `run`
    metrics: pd.DataFrame
    regressor: RegMixRegressor
    best: pd.Series
    rounds: list[list[str]] = field(default_factory=list)


@dataclass
class IterativeSearch:
    """CLIMB's loop: `run_round(i)` proposes, evaluates and refits; `best()` is the final mixture."""

    sampler: MixtureSampler
    evaluate: Evaluate
    targets: Sequence[str]
    rounds: Sequence[int] = (64, 32, 16)
    model: str = "lightgbm_climb"
    params: dict | None = None
    n_candidates: int = 100_000
    top_k: int = 128
    final: str = "best"
    directions: dict[str, str] | None = None
    upper: np.ndarray | None = None  # per-domain caps (the repetition cap) on every proposal and the result
    num_threads: int = 2
    seed: int = 0
    mixtures: pd.DataFrame = field(init=False)
    metrics: pd.DataFrame = field(init=False)
    regressor: RegMixRegressor | None = field(init=False, default=None)
    history: list[list[str]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        if not self.rounds or min(self.rounds) < 1:
            raise ValueError(f"rounds must be positive round sizes, got {list(self.rounds)}")
        self.mixtures = pd.DataFrame(columns=self.sampler.domains, dtype=float)
        self.metrics = pd.DataFrame(dtype=float)

    def run_round(self, index: int) -> pd.DataFrame:
        """Propose and evaluate round `index`, refit the predictor; returns this round's metrics."""
        proposals = propose(self.sampler, self.rounds[index], index, regressor=self.regressor,
                            evaluated=self.mixtures, n_candidates=self.n_candidates, target=self._target(),
                            seed=self.seed, upper=self.upper)
        proposals, metrics = self.evaluate(proposals, index)
        self.mixtures = pd.concat([self.mixtures, proposals]) if len(self.mixtures) else proposals
        self.metrics = pd.concat([self.metrics, metrics]) if len(self.metrics) else metrics
        self.history.append(list(proposals.index))
        self.regressor = fit_predictor(self.mixtures, self.metrics, self.targets, model=self.model,
                                       params=self.params, num_threads=self.num_threads, directions=self.directions)
        return metrics

    def _target(self) -> str | None:
        return self.targets[0] if len(self.targets) == 1 else None

    def best(self) -> pd.Series:
        if self.regressor is None:
            raise RuntimeError("no round has run yet")
        return self.regressor.optimum(self.n_candidates, self.top_k, seed=self.seed, target=self._target(),
                                      candidates=self.sampler.candidates(self.n_candidates), upper=self.upper,
                                      final=self.final)

    def run(self) -> SearchResult:
        for index in range(len(self.history), len(self.rounds)):
            self.run_round(index)
        return SearchResult(self.mixtures, self.metrics, self.regressor, self.best(), self.history)
