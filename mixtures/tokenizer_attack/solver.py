"""The mixture LP with slack, solved with HiGHS, its constraints generated lazily.

As the reference's `run_solver.py::lazy_optimize` (Hayase et al. 2024, §3): variables are the mixture
weights alpha (alpha >= 0, sum 1), a slack v_t >= 0 per merge step and a slack v_p >= 0 per pair; for
the pair m_t merged at step t and any other pair p present then,

    sum_k alpha_k (c_t,k(m_t) - c_t,k(p)) / d_k + v_t + v_p >= 0,

c_t,k the counts in category k's sample before merge t, d_k its sample's pair count before the first
constrained merge; minimise sum v_t + sum v_p. Normalising by pairs (the reference's `pairs` denominator,
which its released-tokenizer solutions use) rather than bytes keeps the slack comparable across mixtures
when constraints start late: after Llama 3's first 100,000 merges an English sample has 0.012 pairs per
byte left and an Arabic one 0.22, so with byte normalisation putting all weight on English makes every
count, and so every violation, small, and the LP's optimum is that degenerate corner (100% handbook English
on Llama 3's extension). The LP's weights are converted back to byte shares of the training data,
w_k ~ alpha_k b_k / d_k with b_k the sample's bytes. Steps whose merge no category's sample contains give
no constraint (the reference's `missing_merges`).

Only violated constraints are added, a round at a time, then the LP is solved again, until the
solution violates none. Finding them is where this differs from the reference, which sweeps the merges
with a priority queue and adds the top 10 competitors per step until 100 are new: here every pair's
count history is a list of segments with constant counts, its value under the current alpha is one
sparse product, and two searches find violated cuts, vectorised: each segment's worst step (lowest
threshold in its range, from a range-minimum table), and each step's strongest competing segments
(from a range-maximum "stabbing" table). The first is what matters when pairs live briefly (from-scratch
merge lists); the second when many pairs span thousands of steps (an extension such as Llama 3's, where
the first search finds the same few worst steps for every pair, about 4 steps per round). A round adds,
per step, the `per_step` most violated cuts (the reference's competitor batch of 10), at most `max_add`
in all, most violated first. Any violated constraint is a valid cut, so the fixed point is the same LP
optimum. After each solve the cuts with positive slack are dropped (they are found again if they become
violated).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from mixtures.tokenizer_attack.pair_counts import PairHistory

PER_STEP = 10  # competitors added per step and round (the reference's competitor_batch_size)
MAX_ADD = 20_000  # constraints added per round (2,000: cl100k_base 30k merges not converged in 500 rounds)
MAX_ROUNDS = 500
DEPTH = 4  # levels of worst-step search per segment and round
STAB_PASSES = 3  # strongest competitors sought per step and round (each pass excludes the segments found)
ROW_CAP = 2  # rows kept, in columns, before degenerate cuts are dropped too (see _IncrementalLP.purge)
TOLERANCE = 1e-6  # violations below this (in counts of a mean-sized sample) are not violations


class SolverError(RuntimeError):
    """HiGHS did not solve the LP."""


class NoPairsError(ValueError):
    """A category's sample has no pairs left before the first constrained merge (every word is one token)."""


@dataclass
class LPSolution:
    alpha: np.ndarray
    objective: float
    step_slack: float
    pair_slack: float
    rounds: int
    constraints: int
    converged: bool
    used_steps: int  # steps whose merge some sample contains
    history: list[dict] = field(default_factory=list)


def pairs_before(history: PairHistory, step: int) -> np.ndarray:
    """Each category's pair count before merge `step` (the sum of its count changes up to then)."""
    return np.asarray(history.deltas[np.flatnonzero(history.event_step <= step)].sum(axis=0)).ravel()


def solve(history: PairHistory, *, first_step: int = 0, per_step: int = PER_STEP, max_add: int = MAX_ADD,
          max_rounds: int = MAX_ROUNDS, tol: float = TOLERANCE, depth: int = DEPTH,
          stab_passes: int = STAB_PASSES) -> LPSolution:
    """The LP's optimum over merges `first_step` .. n_steps - 1 (earlier merges only shape the counts);
    alpha as byte shares."""
    K, T = len(history.categories), history.n_steps
    pairs = pairs_before(history, first_step)
    if (pairs <= 0).any():
        empty = [name for name, n in zip(history.categories, pairs, strict=True) if n <= 0]
        raise NoPairsError(f"no pairs left before merge {first_step} in the sample of {', '.join(empty)}: "
                           f"every word is one token by then, so it says nothing about later merges")
    scale = pairs.mean() / pairs  # counts of a sample with the mean pair count
    to_bytes = history.n_bytes / pairs
    deltas = (history.deltas @ sp.diags(scale)).tocsr()
    pair = history.event_pair
    start = history.pair_start
    # the merged pair's counts at its step (its last event at or before the step)
    merged_counts = np.zeros((T, K))
    seen = history.merge_pair >= 0
    combined = pair * (T + 2) + history.event_step
    at = np.searchsorted(combined, history.merge_pair[seen] * (T + 2) + np.arange(T)[seen], side="right") - 1
    ok = (at >= 0) & (pair[at.clip(min=0)] == history.merge_pair[seen])
    steps = np.arange(T)[seen][ok]
    merged_counts[steps] = history.counts_at(at[ok]) * scale
    active = merged_counts.sum(axis=1) > 0
    active[:first_step] = False
    # each event's segment [lo, hi): its step to the pair's next event, cut at the pair's own merge
    nxt = np.append(history.event_step[1:], T)
    nxt[np.append(pair[1:] != pair[:-1], True)] = T
    merge_step = np.full(len(history.pair_keys), T)
    order = np.arange(T)[history.merge_pair >= 0]
    np.minimum.at(merge_step, history.merge_pair[order], order)
    own = merge_step[pair]
    hi = np.minimum(nxt, np.where(history.event_step <= own, own, nxt))
    lo = np.maximum(history.event_step, first_step)

    alpha = np.full(K, 1.0 / K)
    lp = _IncrementalLP(K)
    step_column = np.full(T, -1)  # LP column of each step's slack, -1 while it has none
    have = np.zeros(0, np.int64)  # constraints added, as step * n_pairs + pair (sorted)
    n_pairs = len(history.pair_keys)
    pair_column = np.full(n_pairs, -1)
    v_step, v_pair = np.zeros(T), np.zeros(n_pairs)
    solution = LPSolution(alpha * to_bytes / (alpha * to_bytes).sum(), 0.0, 0.0, 0.0, 0, 0, False, int(active.sum()))
    for round_ in range(max_rounds):
        value = _segment_values(deltas @ alpha, pair, start)
        threshold = np.where(active, merged_counts @ alpha + v_step, np.inf)
        candidates = np.flatnonzero((value > tol) & (hi > lo))
        competitor = value - v_pair[pair]
        found = [_violated(threshold, competitor, candidates, lo, hi, tol, depth),
                 _strongest(threshold, competitor, candidates, lo, hi, tol, stab_passes)]
        events, worst, violation = (np.concatenate(parts) for parts in zip(*found, strict=True))
        keys, first = np.unique(worst * n_pairs + pair[events], return_index=True)
        fresh = first[~np.isin(keys, have)]  # found twice: once; in the LP already: only its tolerance
        events, worst, violation = events[fresh], worst[fresh], violation[fresh]
        pick = _top_per_step(worst, violation, per_step, max_add)
        if not len(pick):
            solution.converged = True
            break
        events, worst = events[pick], worst[pick]
        step_col = _columns(worst, step_column, lp)
        pair_col = _columns(pair[events], pair_column, lp)
        lp.add_cuts(merged_counts[worst] - history.counts_at(events) * scale, step_col, pair_col)
        lp.row_keys = np.concatenate([lp.row_keys, worst * n_pairs + pair[events]])
        x = lp.solve()
        lp.purge(tol)
        have = np.sort(lp.row_keys)
        alpha = x[:K].clip(min=0)
        alpha /= alpha.sum()
        v_step = np.where(step_column >= 0, x[step_column], 0.0)
        v_pair = np.where(pair_column >= 0, x[pair_column], 0.0)
        shares = alpha * to_bytes
        solution = LPSolution(shares / shares.sum(), float(v_step.sum() + v_pair.sum()), float(v_step.sum()),
                              float(v_pair.sum()), round_ + 1, len(have), False, int(active.sum()), solution.history)
        solution.history.append({"round": round_ + 1, "added": int(len(pick)), "objective": solution.objective})
    return solution


def _columns(items: np.ndarray, column: np.ndarray, lp: _IncrementalLP) -> np.ndarray:
    """LP columns of the slacks of `items` (steps or pairs), creating those they lack."""
    new = np.unique(items[column[items] < 0])
    column[new] = lp.n_cols + np.arange(len(new))
    lp.add_slacks(len(new))
    return column[items]


def _segment_values(event_values: np.ndarray, pair: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Each pair's running sum of its events' values (its count under alpha from that event on)."""
    total = np.cumsum(event_values)
    before = np.concatenate([[0.0], total])[start]
    return total - before[pair]


def _violated(threshold: np.ndarray, competitor: np.ndarray, events: np.ndarray, lo: np.ndarray,
              hi: np.ndarray, tol: float, depth: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Violated (event, step) cuts: each segment's worst step, then the worst of the parts on either side
    of it, `depth` levels deep (up to 2**depth - 1 cuts per segment and round)."""
    table = _MinTable(threshold)
    lo, hi = lo[events], hi[events]
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(depth):
        if not len(events):
            break
        worst = table.argmin(lo, hi)
        violation = competitor[events] - threshold[worst]
        hit = violation > tol * (1 + np.abs(threshold[worst]))
        events, worst, lo, hi = events[hit], worst[hit], lo[hit], hi[hit]
        found.append((events, worst, violation[hit]))
        left, right = worst > lo, hi > worst + 1
        events = np.concatenate([events[left], events[right]])
        lo, hi = np.concatenate([lo[left], worst[right] + 1]), np.concatenate([worst[left], hi[right]])
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))


def _strongest(threshold: np.ndarray, competitor: np.ndarray, events: np.ndarray, lo: np.ndarray,
               hi: np.ndarray, tol: float, passes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Violated (event, step) cuts: at each step the segment covering it with the largest competitor value,
    then the next largest without those found, `passes` times."""
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for _ in range(passes):
        if not len(events):
            break
        best = _stab_max(lo[events], hi[events], competitor[events], len(threshold))
        steps = np.flatnonzero(best >= 0)
        hits = events[best[steps]]
        violation = competitor[hits] - threshold[steps]
        hit = violation > tol * (1 + np.abs(threshold[steps]))
        found.append((hits[hit], steps[hit], violation[hit]))
        events = np.setdiff1d(events, hits[hit], assume_unique=True)
        if not hit.any():
            break
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    return tuple(np.concatenate(parts) for parts in zip(*found, strict=True))


def _stab_max(lo: np.ndarray, hi: np.ndarray, score: np.ndarray, n: int) -> np.ndarray:
    """For each step in [0, n), the index of the highest-scoring non-empty [lo, hi) covering it, or -1: each
    range is written at the two power-of-two blocks that cover it (a sparse table), then pushed down."""
    order = np.argsort(score, kind="stable")
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    level = np.floor(np.log2(hi - lo)).astype(np.int64)
    top = int(level.max(initial=0))
    table = [np.full(n - (1 << j) + 1, -1, np.int64) for j in range(top + 1)]
    for j in np.unique(level):
        sel = np.flatnonzero(level == j)
        np.maximum.at(table[j], lo[sel], rank[sel])
        np.maximum.at(table[j], hi[sel] - (1 << j), rank[sel])
    for j in range(top, 0, -1):
        block, half = table[j], 1 << (j - 1)
        below = table[j - 1]
        np.maximum(below[:len(block)], block, out=below[:len(block)])
        np.maximum(below[half:half + len(block)], block, out=below[half:half + len(block)])
    return np.where(table[0] >= 0, order[table[0].clip(min=0)], -1)


class _MinTable:
    """Range-minimum queries over `values` in O(1) each: a sparse table of argmins, vectorised."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values
        n = len(values)
        self.levels = [np.arange(n)]
        width = 1
        while 2 * width <= n:
            prev = self.levels[-1]
            a, b = prev[:n - 2 * width + 1], prev[width:n - width + 1]
            self.levels.append(np.where(values[a] <= values[b], a, b))
            width *= 2

    def argmin(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Index of the smallest value in each non-empty [lo, hi)."""
        out = np.empty(len(lo), np.int64)
        if not len(lo):
            return out
        level = np.floor(np.log2(hi - lo)).astype(np.int64)
        for j in np.unique(level):
            sel = np.flatnonzero(level == j)
            a, b = self.levels[j][lo[sel]], self.levels[j][hi[sel] - (1 << j)]
            out[sel] = np.where(self.values[a] <= self.values[b], a, b)
        return out


def _top_per_step(steps: np.ndarray, violation: np.ndarray, per_step: int, max_add: int) -> np.ndarray:
    """Indices of the `per_step` largest violations at each step, at most `max_add`, largest first."""
    if not len(steps):
        return np.zeros(0, np.int64)
    order = np.lexsort((-violation, steps))
    first = np.searchsorted(steps[order], steps[order], side="left")
    rank = np.arange(len(order)) - first
    keep = order[rank < per_step]
    return keep[np.argsort(-violation[keep], kind="stable")][:max_add]


class _IncrementalLP:
    """The LP in HiGHS, grown by columns (slacks) and rows (cuts) and re-solved from the last basis."""

    def __init__(self, n_categories: int) -> None:
        import highspy  # the public binding: scipy's linprog() cannot add rows to a solved model and re-solve

        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("threads", 1)
        self.h.setOptionValue("presolve", "off")  # keeps the last basis: a re-solve is a warm dual simplex
        self.h.setOptionValue("solver", "simplex")
        self.inf = highspy.kHighsInf
        self.basic = highspy.HighsBasisStatus.kBasic
        self.K = n_categories
        self.h.addCols(self.K, np.zeros(self.K), np.zeros(self.K), np.ones(self.K), 0,
                       np.zeros(self.K, np.int32), np.zeros(0, np.int32), np.zeros(0))
        self.h.addRows(1, np.ones(1), np.ones(1), self.K, np.zeros(1, np.int32),
                       np.arange(self.K, dtype=np.int32), np.ones(self.K))
        self.n_cols = self.K
        self.row_keys = np.zeros(0, np.int64)  # each row's step * n_pairs + pair, row 0 (sum) excluded

    def add_slacks(self, n: int) -> None:
        if n:
            self.h.addCols(n, np.ones(n), np.zeros(n), np.full(n, self.inf), 0, np.zeros(n, np.int32),
                           np.zeros(0, np.int32), np.zeros(0))
            self.n_cols += n

    def add_cuts(self, coef: np.ndarray, slack_a: np.ndarray, slack_b: np.ndarray) -> None:
        """Rows coef @ alpha + x[slack_a] + x[slack_b] >= 0 (slack columns as absolute indices)."""
        n, K = coef.shape
        indices = np.hstack([np.tile(np.arange(K), (n, 1)), slack_a[:, None], slack_b[:, None]])
        values = np.hstack([coef, np.ones((n, 2))])
        self.h.addRows(n, np.zeros(n), np.full(n, self.inf), n * (K + 2),
                       np.arange(0, n * (K + 2), K + 2, dtype=np.int32),
                       indices.astype(np.int32).ravel(), values.ravel())

    def purge(self, tol: float) -> None:
        """Drop the cuts with positive slack (basic rows, not binding; the basis stays valid): the LP keeps
        only the rows that hold the optimum, so each simplex iteration stays cheap (2.5x faster on cl100k_base,
        10,000 merges). A dropped cut that becomes violated again is found and added again. Degenerate cuts
        (basic at zero slack) pile up (581,000 rows by the end on o200k_base, 30,000 merges, 22 categories, each
        solve 3-5 s), so once the rows kept outnumber ROW_CAP times the columns the basic ones go too: 1.8x less
        CPU in all on that case (352 s against 627 s), the same optimum. Dropping every basic row at every
        round instead stalls: cuts cycle out and back in (not converged in 500 rounds)."""
        value = np.array(self.h.getSolution().row_value)[1:]
        drop = value > tol
        if len(value) - drop.sum() > ROW_CAP * self.n_cols:
            drop |= np.fromiter((status == self.basic for status in self.h.getBasis().row_status[1:]), bool,
                                len(value))
        drop = np.flatnonzero(drop)
        if len(drop):
            self.h.deleteRows(len(drop), (drop + 1).astype(np.int32))
            self.row_keys = np.delete(self.row_keys, drop)

    def solve(self) -> np.ndarray:
        self.h.run()
        status = self.h.getModelStatus()
        if self.h.modelStatusToString(status) != "Optimal":
            raise SolverError(f"HiGHS: {self.h.modelStatusToString(status)}")
        return np.array(self.h.getSolution().col_value)
