"""PreSelect (Shum et al. 2025): keep the documents on which models' losses predict their abilities.

For a family of models with known benchmark scores, a document's predictive strength is how well the
models' losses on it rank like their scores. The paper (hkust-nlp/PreSelect, `train_fasttext.py`)
counts concordant pairs: over all n(n-1)/2 model pairs, a pair counts when the model with the higher
benchmark score has the strictly lower loss on the document; pairs tied on score or on loss count for
nothing, so 6 models give 0..15. Its losses are each model's total loss on the whole document (windows of
1,900 tokens, stride 512) over its characters; we use bits per byte (scoring.losses; the family comes from
scoring.family, the losses from scoring.loss_runner). For one document every normaliser rescales all
models alike, so the count is the same under any of them. The Spearman variant is the
rank correlation between the models' scores and their negated losses (-1..1).

Positives are the documents with the highest strength (the paper: all documents at the maximum, every
pair concordant), negatives the same number from the bottom; a fastText classifier (epoch 3, lr 0.1,
wordNgrams 2) learns to tell them apart, and its positive probability scores the whole corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import rankdata

from scoring.fasttext_classifier import PRESELECT, FastTextClassifier

Strength = Literal["concordant", "spearman"]


def concordant_pairs(losses: np.ndarray, scores: Sequence[float]) -> np.ndarray:
    """Per document, the number of model pairs whose loss order agrees with their score order.

    `losses` is (n_models, n_docs), `scores` the models' benchmark scores (higher is better). A pair
    (i, j) counts when score_i > score_j and loss_i < loss_j, or the reverse; ties count for nothing,
    and a NaN loss (an empty document) makes every pair it is in count for nothing.
    """
    losses = np.asarray(losses, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    if losses.ndim != 2 or losses.shape[0] != len(scores):
        raise ValueError(f"losses must be (n_models={len(scores)}, n_docs), got {losses.shape}")
    first, second = np.triu_indices(len(scores), k=1)
    score_order = np.sign(scores[first] - scores[second])[:, None]
    with np.errstate(invalid="ignore"):
        loss_order = np.sign(losses[first] - losses[second])
    return (score_order * loss_order < 0).sum(axis=0).astype(np.int64)


def max_concordant_pairs(scores: Sequence[float]) -> int:
    """The most pairs a document can get: the pairs of models whose scores differ."""
    scores = np.asarray(scores, dtype=np.float64)
    first, second = np.triu_indices(len(scores), k=1)
    return int((scores[first] != scores[second]).sum())


def spearman_strength(losses: np.ndarray, scores: Sequence[float]) -> np.ndarray:
    """Per document, Spearman's rho between the models' scores and their negated losses (0 when undefined)."""
    losses = np.asarray(losses, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    score_ranks = rankdata(scores) - (len(scores) + 1) / 2
    loss_ranks = rankdata(-losses, axis=0) - (len(scores) + 1) / 2
    numerator = (score_ranks[:, None] * loss_ranks).sum(axis=0)
    denominator = np.sqrt((score_ranks ** 2).sum() * (loss_ranks ** 2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = numerator / denominator
    return np.where(np.isfinite(rho), rho, 0.0)


def predictive_strength(losses: np.ndarray, scores: Sequence[float], method: Strength = "concordant") -> np.ndarray:
    if method == "concordant":
        return concordant_pairs(losses, scores).astype(np.float64)
    if method == "spearman":
        return spearman_strength(losses, scores)
    raise ValueError(f"unknown strength '{method}' (concordant or spearman)")


def training_examples(strength: np.ndarray, n_positive: int | None = None, top_value: float | None = None,
                      seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) document indices: the top documents and as many from the bottom.

    `n_positive` fixes how many; otherwise the positives are all documents at `top_value` (the paper:
    the maximum strength; default: the highest strength observed). Either way at most half the
    documents, so the two sets never overlap. Ties are broken at random (seeded).
    """
    strength = np.asarray(strength, dtype=np.float64)
    if n_positive is None:
        top = np.nanmax(strength) if top_value is None else top_value
        n_positive = int((strength >= top).sum())
    n_positive = min(n_positive, len(strength) // 2)
    tie_break = np.random.default_rng(seed).random(len(strength))
    positives = np.lexsort((tie_break, -np.nan_to_num(strength, nan=-np.inf)))[:n_positive]
    ascending = np.lexsort((tie_break, np.nan_to_num(strength, nan=np.inf)))
    return positives, ascending[~np.isin(ascending, positives)][:n_positive]


@dataclass
class PreSelectFit:
    """What a PreSelect fit learned from, for the report and the manifest."""

    strength: np.ndarray
    positives: np.ndarray
    negatives: np.ndarray
    max_strength: float


class PreSelect:
    """fit(texts, losses, scores) trains the fastText scorer; predict_proba(texts) -> the `preselect` score.

    `positive_fraction` None follows the paper (positives = documents whose strength is the maximum
    possible), else the top fraction of documents. fastText parameters default to the paper's.
    """

    def __init__(self, strength: Strength = "concordant", positive_fraction: float | None = None, seed: int = 0,
                 **fasttext: float | int | None) -> None:
        self.strength = strength
        self.positive_fraction = positive_fraction
        self.seed = seed
        self.fasttext = {**PRESELECT, "seed": seed, **fasttext}

    def fit(self, texts: Sequence[str], losses: np.ndarray, scores: Sequence[float]) -> PreSelect:
        losses = np.asarray(losses, dtype=np.float64)
        if losses.shape[1] != len(texts):
            raise ValueError(f"losses cover {losses.shape[1]} documents, {len(texts)} texts given")
        strength = predictive_strength(losses, scores, self.strength)
        best = float(max_concordant_pairs(scores)) if self.strength == "concordant" else 1.0
        strength = np.where(np.isnan(losses).any(axis=0), np.nan, strength)  # empty texts: no evidence
        n_positive = None if self.positive_fraction is None else round(self.positive_fraction * len(texts))
        positives, negatives = training_examples(strength, n_positive, best if n_positive is None else None,
                                                 self.seed)
        if len(positives) == 0:
            raise ValueError(f"no document reaches the maximum strength {best:g}: set positive_fraction")
        chosen = np.concatenate([positives, negatives])
        self.classifier_ = FastTextClassifier(**self.fasttext).fit(
            [texts[i] for i in chosen], np.arange(len(chosen)) < len(positives))
        self.fit_ = PreSelectFit(strength, positives, negatives, best)
        return self

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.classifier_.predict_proba(texts)

    def strength_table(self, ids: Sequence[str]):
        """What the fit learnt from, per document: id, strength, label (positive, negative or null)."""
        import pandas as pd

        label = np.full(len(ids), None, dtype=object)
        label[self.fit_.positives], label[self.fit_.negatives] = "positive", "negative"
        return pd.DataFrame({"id": list(ids), "strength": self.fit_.strength, "label": label})


def fit_family(members: Sequence, ids: Sequence[str], texts: Sequence[str], cache=None, use_ray: bool | None = None,
               device: str = "auto", **preselect) -> tuple[PreSelect, np.ndarray, dict[str, int]]:
    """PreSelect trained from a family (scoring.family members): the fitted scorer, the (n_models, n_docs) bits
    per byte, and how many documents each model scored now rather than from the cache."""
    from scoring.loss_runner import family_losses

    models = [member.load(device) for member in members]
    losses, scored = family_losses(models, ids, texts, cache=cache, use_ray=use_ray)
    fitted = PreSelect(**preselect).fit(list(texts), losses, [member.score for member in members])
    return fitted, losses, scored
