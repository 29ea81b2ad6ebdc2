"""Student raters: small models trained on DataMan annotations that rate the whole corpus cheaply.

DataMan fine-tunes a small LM on its LLM's ratings and lets it annotate the corpus; here the student is a
linear model per criterion (ridge regression, predictions clipped to 1-5) and a ridge (one-vs-rest)
domain classifier (logistic regression took minutes on 2^18 hashed features; ridge agreed as often), over
either hashed word 1-2-gram TF-IDF features (no model files; fastText's feature space) or model2vec
sentence embeddings (operators/embed.py). scikit-learn's fit/predict, and one `joblib` file to ship to
the Ray actors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import joblib
import numpy as np
import pyarrow as pa

from scoring.dataman import CRITERIA, column_name

Features = Literal["hashing", "embeddings"]


class StudentRater:
    """fit(texts, annotations) / predict(texts) -> {column: values} with `dataman_<criterion>` and `domain`."""

    def __init__(self, features: Features = "hashing", alpha: float = 1.0, domain_alpha: float = 0.3,
                 n_features: int = 2**18, max_chars: int = 20_000, embedding_model: str | None = None) -> None:
        self.features = features
        self.alpha = alpha
        self.domain_alpha = domain_alpha
        self.n_features = n_features
        self.max_chars = max_chars
        self.embedding_model = embedding_model

    def _featurizer(self):
        if self.features == "hashing":
            from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
            from sklearn.pipeline import make_pipeline

            return make_pipeline(HashingVectorizer(ngram_range=(1, 2), n_features=self.n_features,
                                                   alternate_sign=False, norm=None),
                                 TfidfTransformer(sublinear_tf=True))
        if self.features == "embeddings":
            return None
        raise ValueError(f"unknown features '{self.features}' (hashing or embeddings)")

    def _transform(self, texts: Sequence[str], fit: bool = False):
        texts = [(text or "")[: self.max_chars] for text in texts]
        if self.features == "embeddings":
            if getattr(self, "_encoder", None) is None:
                from operators.embed import load_encoder

                self._encoder = load_encoder("model2vec", self.embedding_model)
            return self._encoder.encode(texts)
        return self.featurizer_.fit_transform(texts) if fit else self.featurizer_.transform(texts)

    def fit(self, texts: Sequence[str], annotations: pa.Table) -> StudentRater:
        """Train on annotations (ANNOTATION_SCHEMA rows, in the order of `texts`)."""
        from sklearn.linear_model import Ridge, RidgeClassifier

        if annotations.num_rows != len(texts):
            raise ValueError(f"{annotations.num_rows} annotations for {len(texts)} texts")
        self.annotators_ = sorted(set(annotations.column("annotator").to_pylist()))  # e.g. the demo teacher's label
        self.featurizer_ = self._featurizer()
        features = self._transform(texts, fit=True)
        self.regressors_ = {key: Ridge(alpha=self.alpha, solver="sparse_cg" if self.features == "hashing" else "auto")
                            .fit(features, np.asarray(annotations.column(key), float)) for key in CRITERIA}
        domains = np.asarray(annotations.column("domain").to_pylist(), dtype=object)
        self.domains_ = sorted(set(domains))
        self.domain_model_ = (RidgeClassifier(alpha=self.domain_alpha).fit(features, domains)
                              if len(self.domains_) > 1 else None)
        return self

    def predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Column name -> values: float32 `dataman_<criterion>` in [1, 5], and `domain` (object array)."""
        if len(texts) == 0:
            return {**{column_name(k): np.zeros(0, np.float32) for k in CRITERIA}, "domain": np.array([], object)}
        features = self._transform(texts)
        out = {column_name(key): np.clip(model.predict(features), 1.0, 5.0).astype(np.float32)
               for key, model in self.regressors_.items()}
        out["domain"] = (self.domain_model_.predict(features) if self.domain_model_ is not None
                         else np.full(len(texts), self.domains_[0], dtype=object))
        return out

    def agreement(self, texts: Sequence[str], annotations: pa.Table) -> dict[str, dict[str, float]]:
        """How well the student agrees with its teacher on (held-out) annotated texts: per criterion the share
        rated exactly alike (prediction rounded), within one point, and Spearman's rho; the domain's accuracy."""
        from scipy.stats import spearmanr

        predicted = self.predict(texts)
        report = {}
        for key in CRITERIA:
            truth = np.asarray(annotations.column(key), float)
            guess = predicted[column_name(key)].astype(float)
            rho = spearmanr(truth, guess).statistic if np.ptp(truth) and np.ptp(guess) else float("nan")
            report[key] = {"exact": float((np.rint(guess) == truth).mean()),
                           "within_1": float((np.abs(guess - truth) <= 1).mean()), "spearman": float(rho)}
        domains = np.asarray(annotations.column("domain").to_pylist(), dtype=object)
        report["domain"] = {"exact": float((predicted["domain"] == domains).mean())}
        return report

    def __getstate__(self) -> dict:
        return {key: value for key, value in self.__dict__.items() if key != "_encoder"}

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
        joblib.dump(self, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> StudentRater:
        rater = joblib.load(path)
        if not isinstance(rater, cls):
            raise ValueError(f"{path} does not hold a StudentRater")
        return rater
