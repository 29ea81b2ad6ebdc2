"""The optimum on the simplex: per-domain caps on candidates, and the log-linear law's direct solve.

`cap_mixtures` makes Dirichlet candidates respect per-domain upper bounds (the repetition cap) by moving
the excess of a capped domain to the others in proportion to their weights, rather than rejecting the
draw as olmix's simulation proposer does: with a small domain and a large plan most draws would be
rejected. The simplex cut by box bounds is convex, so the mean of capped candidates (RegMix's top-k
mean) stays within the caps.

`solve_log_linear` is olmix's exact proposer (allenai/olmix `olmix/fit/utils.py`, LogLinearExactProposer):
minimise sum_i a_i exp(t_i . r) + kl * KL(r || prior) over the simplex with 0 <= r <= upper. olmix hands
it to cvxpy/ECOS; here it is SLSQP from a few starts (the prior, the best simulated candidate, the
caps-respecting uniform mixture), because with every a_i >= 0 (losses minimised, accuracies maximised by
a law with k < 0) the problem is convex and any start reaches the one optimum, and with mixed signs
(not convex) several starts are the cheap safeguard. `a_i` carries the objective's direction, weight and
standardisation, so kl is in units of the standardised objective (olmix: kl_reg 0.1 on raw losses).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

KL_PENALTY = 0.1
FLOOR = 1e-12


def cap_mixtures(mixtures: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Rows of `mixtures` with no weight above `upper` (which must sum to >= 1), still summing to 1."""
    x = np.array(mixtures, dtype=float, copy=True)
    upper = np.asarray(upper, dtype=float)
    for _ in range(x.shape[1] + 1):
        over = x > upper + 1e-12
        if not over.any():
            break
        excess = np.where(over, x - upper, 0.0).sum(axis=1, keepdims=True)
        x = np.minimum(x, upper)
        free = x < upper - 1e-12
        room = np.where(free, x, 0.0)
        total = room.sum(axis=1, keepdims=True)
        capacity = np.where(free, upper - x, 0.0)
        # proportional to the current weights; rows whose free domains are all at 0 get spread by capacity
        share = np.where(total > 0, room / np.where(total > 0, total, 1.0),
                         capacity / np.maximum(capacity.sum(axis=1, keepdims=True), 1e-300))
        x = x + excess * share
    return x / x.sum(axis=1, keepdims=True)


def solve_log_linear(coefficients: np.ndarray, exponents: np.ndarray, prior: np.ndarray, *,
                     upper: np.ndarray | None = None, kl: float = KL_PENALTY,
                     starts: list[np.ndarray] | None = None) -> np.ndarray:
    """argmin_r sum_i coefficients[i] * exp(exponents[i] . r) + kl * KL(r || prior) on the capped simplex."""
    a = np.asarray(coefficients, dtype=float)
    T = np.atleast_2d(np.asarray(exponents, dtype=float))
    d = T.shape[1]
    q = np.maximum(np.asarray(prior, dtype=float), FLOOR)
    q = q / q.sum()
    bound = np.ones(d) if upper is None else np.minimum(np.asarray(upper, dtype=float), 1.0)

    def objective(r: np.ndarray) -> tuple[float, np.ndarray]:
        terms = a * np.exp(np.clip(T @ r, -700, 700))
        safe = np.maximum(r, FLOOR)
        value = terms.sum() + kl * float(np.sum(safe * np.log(safe / q)))
        return value, T.T @ terms + kl * (np.log(safe / q) + 1.0)

    candidates = [cap_mixtures(q[None, :], bound)[0], cap_mixtures(np.full((1, d), 1.0 / d), bound)[0]]
    candidates += [cap_mixtures(np.asarray(s, dtype=float)[None, :], bound)[0] for s in (starts or [])]
    best, best_value = None, np.inf
    for start in candidates:
        result = minimize(objective, start, jac=True, method="SLSQP",
                          bounds=[(0.0, float(b)) for b in bound],
                          constraints=[{"type": "eq", "fun": lambda r: r.sum() - 1.0, "jac": lambda r: np.ones(d)}],
                          options={"maxiter": 500, "ftol": 1e-12})
        r = np.clip(result.x, 0.0, bound)
        r = r / r.sum()
        value = objective(r)[0]
        if value < best_value:
            best, best_value = r, value
    return best
