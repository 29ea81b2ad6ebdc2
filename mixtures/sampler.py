"""RegMix's mixture sampler: Dirichlet draws around the token-share prior, bounded, floored, deduplicated.

As in sail-sg/regmix `mixture_config/synthesize_mixture.py`: the Dirichlet centre is the domains'
token shares at temperature 0.5 (flatter than the corpus, so small domains get tried); each draw
picks one of 15 concentrations log-spaced 0.1..5 (small = spiky mixtures, large = close to the
centre); a draw is rejected when a domain exceeds 15x its *untempered* share (it would have to be
repeated more than 15 epochs); weights under 2e-4 become 0 and the rest are rounded to that grid and
renormalised; mixtures equal on the grid are near-duplicates and kept once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

TEMPERATURE = 0.5
MAX_USAGE = 15.0
MIN_WEIGHT = 2e-4


def regmix_strengths(low: float = 0.1, high: float = 5.0, n: int = 15) -> np.ndarray:
    return np.logspace(np.log10(low), np.log10(high), n)


@dataclass
class MixtureSampler:
    """Draws mixtures over `domains`: Dirichlet(`centre` * s) with s from `strengths`, no domain above `upper`.

    Build it with `from_token_counts` (RegMix's rule) or `from_mixtures` (to search the region earlier
    runs covered when the token counts are unknown, e.g. RegMix's released data).
    """

    domains: list[str]
    centre: np.ndarray
    upper: np.ndarray
    strengths: np.ndarray = field(default_factory=regmix_strengths)
    min_weight: float = MIN_WEIGHT
    seed: int = 0

    def __post_init__(self) -> None:
        self.centre = np.asarray(self.centre, dtype=float)
        self.upper = np.asarray(self.upper, dtype=float)
        if not (len(self.domains) == len(self.centre) == len(self.upper)) or len(self.domains) < 2:
            raise ValueError("a sampler needs at least two domains, with one centre and one bound each")
        if not 0 < self.min_weight < 1:
            raise ValueError(f"min_weight must be in (0, 1), got {self.min_weight}")
        if (self.centre <= 0).any():
            raise ValueError(f"domain '{self.domains[int(np.argmin(self.centre))]}' has no tokens: drop it")
        self.centre = self.centre / self.centre.sum()
        self._rng = np.random.default_rng(self.seed)

    @classmethod
    def from_token_counts(cls, tokens: Mapping[str, float], *, temperature: float = TEMPERATURE,
                          max_usage: float = MAX_USAGE, **kwargs) -> MixtureSampler:
        domains = list(tokens)
        shares = np.array([float(tokens[d]) for d in domains])
        if (shares <= 0).any():
            empty = [d for d, s in zip(domains, shares, strict=True) if s <= 0]
            raise ValueError(f"domains without tokens cannot be sampled: {', '.join(map(str, empty))}")
        shares = shares / shares.sum()
        centre = shares ** temperature
        return cls(domains, centre / centre.sum(), np.minimum(shares * max_usage, 1.0), **kwargs)

    @classmethod
    def from_mixtures(cls, mixtures: pd.DataFrame, **kwargs) -> MixtureSampler:
        """Centre = the runs' mean mixture, bound = each domain's largest weight among them."""
        centre = mixtures.mean(axis=0).to_numpy().clip(min=1e-6)
        return cls(list(mixtures.columns), centre, mixtures.max(axis=0).to_numpy(), **kwargs)

    def on_grid(self, mixtures: np.ndarray | pd.DataFrame) -> np.ndarray:
        """Mixtures in units of min_weight: rows equal here are near-duplicates, the same mixture."""
        return np.round(np.asarray(mixtures, dtype=float) / self.min_weight).astype(np.int64)

    def draw(self, n: int) -> np.ndarray:
        """Up to `n` accepted mixtures (rows), floored and renormalised; duplicates not removed."""
        strength = self._rng.choice(self.strengths, size=(n, 1))
        # Dirichlet via normalised gammas, vectorised over per-row concentrations; shapes this small
        # underflow to exactly 0, which is what the floor would do anyway.
        draws = self._rng.standard_gamma(self.centre[None, :] * strength)
        totals = draws.sum(axis=1, keepdims=True)
        keep = totals[:, 0] > 0
        draws = draws[keep] / totals[keep]
        draws = np.round(np.where(draws < self.min_weight, 0.0, draws) / self.min_weight) * self.min_weight
        draws = draws[draws.sum(axis=1) > 0]
        draws = draws / draws.sum(axis=1, keepdims=True)
        # The bound is checked after flooring (RegMix checks before), so it holds for what is returned.
        return draws[(draws <= self.upper[None, :]).all(axis=1)]

    def candidates(self, n: int, *, max_rounds: int = 50) -> np.ndarray:
        """Exactly `n` accepted mixtures (duplicates allowed): the pool a fitted regressor ranks."""
        found: list[np.ndarray] = []
        have = 0
        for _ in range(max_rounds):
            batch = self.draw(min(max(2 * (n - have), 1024), 2_000_000))
            found.append(batch)
            have += len(batch)
            if have >= n:
                return np.concatenate(found)[:n]
        raise ValueError(f"only {have} of {n} mixtures passed the bound after {max_rounds} rounds")

    def sample(self, n: int, *, max_rounds: int = 50) -> pd.DataFrame:
        """`n` distinct mixtures as a DataFrame (index `run`: run-0000 ...), in draw order."""
        found = np.empty((0, len(self.domains)))
        for _ in range(max_rounds):
            found = np.concatenate([found, self.draw(max(1024, 4 * n))])
            _, first = np.unique(self.on_grid(found), axis=0, return_index=True)
            found = found[np.sort(first)]
            if len(found) >= n:
                break
        else:
            raise ValueError(f"only {len(found)} distinct mixtures of {n} passed the bound after "
                             f"{max_rounds} rounds: raise max_usage or ask for fewer")
        runs = pd.Index([f"run-{i:04d}" for i in range(n)], name="run")
        return pd.DataFrame(found[:n], index=runs, columns=self.domains)
