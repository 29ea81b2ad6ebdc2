"""What a mixture search optimises: targets with a direction and a weight, and the repetition cap.

Several targets combine as a weighted mean of standardised predictions (each target's prediction minus
the measured runs' mean, over their standard deviation, negated when the target is maximised), so a loss
in nats and an accuracy in percent weigh what their weights say, not what their units say. Lower scores
are better.

The repetition cap is olmix's (allenai/olmix `olmix/fit/utils.py`, `constrain_objective`): a domain's
weight times the planned training tokens may not exceed `repetition_factor` epochs of the tokens the
corpus holds for it. olmix's default factor is 5; ours is 4, the epoch count past which repeated data
stops paying off in Muennighoff et al. (2023), the same bound the materializer uses (`max_epochs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("minimize", "maximize")
ALIASES = {"min": "minimize", "minimise": "minimize", "max": "maximize", "maximise": "maximize"}
REPETITION_FACTOR = 4.0


def direction(value: str) -> str:
    """'min'/'minimise'/'minimize' -> 'minimize', likewise for maximize; anything else is an error."""
    resolved = ALIASES.get(value, value)
    if resolved not in DIRECTIONS:
        raise ValueError(f"direction must be minimize or maximize, got '{value}'")
    return resolved


@dataclass(frozen=True)
class Objective:
    """Targets, each with a direction and a weight; `score` is lower-is-better."""

    targets: tuple[str, ...]
    directions: tuple[str, ...]
    weights: tuple[float, ...]

    @classmethod
    def of(cls, targets: Sequence[str], directions: Mapping[str, str] | None = None,
           weights: Mapping[str, float] | None = None) -> Objective:
        directions, weights = directions or {}, weights or {}
        unknown = sorted(set(directions) - set(targets)) + sorted(set(weights) - set(targets))
        if unknown:
            raise ValueError(f"direction or weight for targets not fitted: {', '.join(unknown)}; "
                             f"targets: {', '.join(targets)}")
        resolved = tuple(direction(directions.get(t, "minimize")) for t in targets)
        values = tuple(float(weights.get(t, 1.0)) for t in targets)
        if any(w < 0 for w in values) or sum(values) <= 0:
            raise ValueError("target weights must be non-negative and not all zero")
        return cls(tuple(targets), resolved, values)

    @classmethod
    def parse(cls, specs: Sequence[str]) -> tuple[list[str], dict[str, str], dict[str, float]]:
        """CLI specs `name`, `name:max` or `name:min:2` -> (targets, directions, weights)."""
        targets, directions, weights = [], {}, {}
        known = (*DIRECTIONS, *ALIASES)
        for spec in specs:
            parts = spec.split(":")  # metric names may hold ':' themselves, so read from the right
            name, how, weight = spec, None, None
            if len(parts) >= 3 and parts[-2] in known:
                name, how, weight = ":".join(parts[:-2]), parts[-2], parts[-1]
            elif len(parts) >= 2 and parts[-1] in known:
                name, how = ":".join(parts[:-1]), parts[-1]
            targets.append(name)
            if how is not None:
                directions[name] = direction(how)
            if weight is not None:
                try:
                    weights[name] = float(weight)
                except ValueError:
                    raise ValueError(f"target '{spec}': weight '{weight}' is not a number") from None
        return targets, directions, weights

    def signs(self) -> np.ndarray:
        return np.array([1.0 if d == "minimize" else -1.0 for d in self.directions])

    def score(self, predictions: np.ndarray, centre: np.ndarray, scale: np.ndarray) -> np.ndarray:
        """Weighted mean of signed standardised predictions; predictions are (n, targets)."""
        standard = (np.asarray(predictions, dtype=float) - centre) / scale
        weights = np.asarray(self.weights) / np.sum(self.weights)
        return standard @ (weights * self.signs())


@dataclass(frozen=True)
class RepetitionCap:
    """weight[d] * planned_tokens <= repetition_factor * tokens[d], per domain."""

    tokens: Mapping[str, float]
    planned_tokens: float
    repetition_factor: float = REPETITION_FACTOR

    def __post_init__(self) -> None:
        if self.planned_tokens <= 0 or self.repetition_factor <= 0:
            raise ValueError("planned tokens and the repetition factor must be positive")

    @classmethod
    def from_run(cls, run_dir: str, by: str, planned_tokens: float, *, repetition_factor: float = REPETITION_FACTOR,
                 stage: str | None = None) -> RepetitionCap:
        """Tokens per domain read from the run's shards (mixtures.domains)."""
        from mixtures.domains import CorpusDomains

        counts = CorpusDomains(run_dir, by, stage=stage).token_counts().tokens
        return cls({str(d): float(t) for d, t in counts.items()}, planned_tokens, repetition_factor)

    def upper(self, domains: Sequence[str]) -> np.ndarray:
        """The largest weight each domain may have; the caps must leave room for a whole mixture."""
        missing = [d for d in domains if d not in self.tokens]
        if missing:
            raise ValueError(f"no token count for domains {', '.join(missing[:5])}; "
                             f"the cap knows {', '.join(list(self.tokens)[:8])}")
        upper = np.minimum(1.0, np.array([self.repetition_factor * self.tokens[d] for d in domains])
                           / self.planned_tokens)
        if upper.sum() < 1.0:
            raise ValueError(f"{self.planned_tokens:,.0f} planned tokens exceed {self.repetition_factor:g} epochs "
                             f"of the whole corpus ({sum(self.tokens[d] for d in domains):,.0f} tokens): "
                             f"no mixture meets the repetition cap")
        return upper

    def describe(self, domains: Sequence[str]) -> dict:
        return {"planned_tokens": self.planned_tokens, "repetition_factor": self.repetition_factor,
                "max_weight": dict(zip(domains, self.upper(domains).round(6).tolist(), strict=True))}
