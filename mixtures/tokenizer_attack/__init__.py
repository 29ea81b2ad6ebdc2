"""Data mixture inference from a BPE tokenizer's merge list (Hayase et al. 2024; alisawuffles/tokenizer-attack).

A BPE trainer picks, at every step, the most frequent pair of its training data. Given samples of
candidate categories (languages, code, domains), the ordered merge list therefore constrains the
categories' shares in that data: each merge must have been the most frequent pair of the mixture after
the merges before it. `infer_mixture` counts pairs per category merge by merge (pair_counts.py) and
solves the resulting LP with slack (solver.py); the shares are byte shares of the training data.

Pipeline as in the reference: merges + the tokenizer's own pre-tokenization (merges.py), per-category
samples (samples.py; the paper uses 1 GB per category, here `sample_bytes` is the knob and
docs/tokenizer-inference.md reports its effect), pair counts for the first `n_merges` merges, the LP over
merges `first_merge` onward (the paper's Llama 3 analysis starts after the 100K merges it shares with
cl100k_base); counts are normalised by each sample's pairs before `first_merge` (solver.py says why).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

from mixtures.tokenizer_attack.merges import BPEMerges, TokenizerError, load_merges
from mixtures.tokenizer_attack.pair_counts import PairHistory, count_pairs
from mixtures.tokenizer_attack.samples import DEFAULT_SAMPLE_BYTES, SampleError
from mixtures.tokenizer_attack.solver import solve

__all__ = ["BPEMerges", "MixtureEstimate", "SampleError", "TokenizerError", "DEFAULT_SAMPLE_BYTES", "RUN_MIXTURES",
           "infer_mixture", "load_merges", "pair_history"]
RUN_MIXTURES = "tokenizer-mixtures"  # a run's inferred mixtures (infer-mixture --output), one .json each


@dataclass
class MixtureEstimate:
    """The inferred byte shares and what the LP needed to get them."""

    tokenizer: str
    proportions: dict[str, float]
    slack: float  # LP objective: sum of step and pair slacks (counts of a sample with the mean pair count)
    step_slack: float
    pair_slack: float
    n_merges: int  # merges applied
    first_merge: int
    constrained_merges: int  # merges from first_merge on that some sample contains
    constraints: int
    rounds: int
    converged: bool
    sample_bytes: dict[str, int]
    words: int  # distinct pre-tokens over all samples
    seconds: dict[str, float]

    def to_dict(self) -> dict:
        return asdict(self)


def pair_history(merges: BPEMerges, samples: Mapping[str, Iterable[str]], *,
                 n_merges: int | None = None) -> PairHistory:
    """Per-category pair counts of `samples` (name -> texts) along the first `n_merges` merges."""
    if len(samples) < 2:
        raise SampleError(f"the attack needs at least two categories, got {len(samples)}")
    words, sizes = {}, {}
    for name, texts in samples.items():
        texts = list(texts)
        sizes[name] = sum(len(t.encode("utf-8")) for t in texts)
        if not sizes[name]:
            raise SampleError(f"category '{name}' has no text")
        words[name] = merges.words(texts)
    return count_pairs(merges, words, sizes, n_merges=n_merges)


def infer_mixture(tokenizer: str | BPEMerges, samples: Mapping[str, Iterable[str]], *,
                  n_merges: int | None = None, first_merge: int = 0, pattern: str | None = None,
                  **solver_options) -> MixtureEstimate:
    """Each category's share of the tokenizer's training data, from samples (name -> texts) of each."""
    clock = time.perf_counter()
    merges = tokenizer if isinstance(tokenizer, BPEMerges) else load_merges(tokenizer, pattern=pattern)
    seconds = {"load": time.perf_counter() - clock}
    if not 0 <= first_merge < (n_merges or len(merges)):
        raise ValueError(f"first_merge must be in [0, {n_merges or len(merges)}), got {first_merge}")
    clock = time.perf_counter()
    history = pair_history(merges, samples, n_merges=n_merges)
    seconds["count"] = time.perf_counter() - clock
    clock = time.perf_counter()
    lp = solve(history, first_step=first_merge, **solver_options)
    seconds["solve"] = time.perf_counter() - clock
    return MixtureEstimate(
        merges.name, {name: float(a) for name, a in zip(history.categories, lp.alpha, strict=True)}, lp.objective,
        lp.step_slack, lp.pair_slack, history.n_steps, first_merge, lp.used_steps, lp.constraints, lp.rounds,
        lp.converged, {n: int(b) for n, b in zip(history.categories, history.n_bytes, strict=True)}, history.n_words,
        {k: round(v, 3) for k, v in seconds.items()})
