"""Student raters: linear models trained on DataMan annotations that rate the whole corpus cheaply.

DataMan fine-tunes a small LM (Qwen2-1.5B) on its teacher's ratings and lets it annotate the corpus; here the
student is one multinomial logistic regression per criterion whose classes are the 1-5 ratings, and one whose
classes are the domains, all over one TF-IDF of word unigrams (sublinear tf, a vocabulary learnt from the
training texts). A criterion's score is the expected rating under its model's class probabilities: continuous
in [1, 5], so documents of one rating still rank. The text is vectorized once for the 15 models.
`fit` keeps `held_out` of the annotations from training and measures there how well the students agree with
their teacher; the folder it saves holds `students.npz` (vocabulary, idf, each model's weights; none for a
criterion the annotations never vary: every text gets that rating) and `student.json` (settings, labels,
annotator, that agreement).

Why not fastText (the students were fastText models before): on the demo's 300 ratings fastText trained at
random into "Encountered NaN" (one try in eight to all eight, at any lr, on one thread or ten) and its domain
accuracy on the 60 held-out documents spread over 0.18-0.52 between seeds; these students train the same way
every time, reach 0.55-0.67 there (mean Spearman over the criteria 0.38-0.42 against fastText's 0.32-0.35) and
annotate several times faster (benchmarks/scoring.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from scoring.dataman import CRITERIA, column_name

METADATA = "student.json"
WEIGHTS = "students.npz"
FORMAT = "mixforge-dataman-student/logistic-1"
DOMAIN = "domain"
# Measured on the demo run's 300 ratings (240 to learn from, 60 held out, four splits): C 1 gave domain accuracy
# 0.50-0.58, C 10 0.55-0.67, C 100 0.57-0.68, mean Spearman 0.38-0.42 at each; C 10 is the middle.
DEFAULTS = {"c": 10.0, "max_features": 100_000}


class StudentRater:
    """fit(texts, annotations) / predict(texts) -> {column: values} with `dataman_<criterion>` and `domain`."""

    def __init__(self, c: float = DEFAULTS["c"], max_features: int = DEFAULTS["max_features"],
                 max_chars: int = 20_000, held_out: float = 0.2, seed: int = 0) -> None:
        self.c = c
        self.max_features = max_features
        self.max_chars = max_chars
        self.held_out = held_out
        self.seed = seed

    def settings(self) -> dict:
        return {"c": self.c, "max_features": self.max_features, "max_chars": self.max_chars,
                "held_out": self.held_out, "seed": self.seed}

    def fit(self, texts: Sequence[str], annotations: pa.Table) -> StudentRater:
        """Train on annotations (ANNOTATION_SCHEMA rows, in the order of `texts`) but the held-out share, on which
        `agreement_` is measured (None when nothing is held out)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        if annotations.num_rows != len(texts):
            raise ValueError(f"{annotations.num_rows} annotations for {len(texts)} texts")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"held_out must be within [0, 1), not {self.held_out}")
        order = np.random.default_rng(self.seed).permutation(len(texts))
        n_test = int(round(self.held_out * len(texts)))
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        if len(train) == 0:
            raise ValueError("no annotations left to train the students on")
        train_texts = [self._cut(texts[i]) for i in train]
        tfidf = TfidfVectorizer(sublinear_tf=True, max_features=self.max_features, dtype=np.float32).fit(train_texts)
        self._use_vocabulary(np.asarray(tfidf.get_feature_names_out(), dtype=str), tfidf.idf_.astype(np.float32))
        features = self._features(train_texts)
        self.annotators_ = sorted(set(annotations.column("annotator").to_pylist()))  # e.g. the demo teacher's label
        self.labels_, self.weights_ = {}, {}
        for key in (*CRITERIA, DOMAIN):
            values = [str(v) for v in annotations.column(key).take(pa.array(train)).to_pylist()]
            self.labels_[key] = sorted(set(values))
            if len(self.labels_[key]) == 1:  # one label: nothing to learn, every text gets it
                self.weights_[key] = None
                continue
            index = {label: i for i, label in enumerate(self.labels_[key])}
            model = LogisticRegression(C=self.c, max_iter=1000).fit(features, [index[v] for v in values])
            coef, intercept = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
            if len(index) == 2:  # a binary model's one logit z is the softmax of (0, z)
                coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([np.zeros(1, np.float32),
                                                                                          intercept])
            self.weights_[key] = (coef, intercept)
        self.n_train_ = len(train)
        self.agreement_ = (self.agreement([texts[i] for i in test], annotations.take(pa.array(test)))
                           if n_test else None)
        return self

    def _cut(self, text: str | None) -> str:
        return (text or "")[: self.max_chars]

    def _use_vocabulary(self, vocabulary: np.ndarray, idf: np.ndarray) -> None:
        from sklearn.feature_extraction.text import CountVectorizer

        self.vocabulary_, self.idf_ = vocabulary, idf
        self._counter = CountVectorizer(vocabulary=vocabulary, dtype=np.float32)

    def _features(self, texts: list[str]):
        """TfidfVectorizer's transform (sublinear tf, idf, l2 rows) from the saved vocabulary and idf."""
        from sklearn.preprocessing import normalize

        counts = self._counter.transform(texts)
        np.log(counts.data, out=counts.data)
        counts.data += 1
        return normalize(counts.multiply(self.idf_).tocsr())

    def probabilities(self, key: str, features) -> np.ndarray:
        """(texts, labels_[key]) probabilities of a criterion's ratings or of the domains, rows summing to 1."""
        if self.weights_[key] is None:
            return np.ones((features.shape[0], 1))
        coef, intercept = self.weights_[key]
        logits = np.asarray(features @ coef.T, dtype=np.float64) + intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        return odds / odds.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Column name -> values: float32 `dataman_<criterion>` in [1, 5] (the expected rating), and `domain`
        (object array, the most probable)."""
        features = self._features([self._cut(text) for text in texts])
        out = {column_name(key): (self.probabilities(key, features) @ np.asarray(self.labels_[key], float))
               .astype(np.float32) for key in CRITERIA}
        domains = np.asarray(self.labels_[DOMAIN], dtype=object)
        out[DOMAIN] = domains[self.probabilities(DOMAIN, features).argmax(axis=1)] if len(texts) else domains[:0]
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
        domains = np.asarray(annotations.column(DOMAIN).to_pylist(), dtype=object)
        report[DOMAIN] = {"accuracy": float((predicted[DOMAIN] == domains).mean())}
        return report

    def metadata(self) -> dict:
        """What student.json records: the format, settings, labels per model, annotator and agreement."""
        return {"format": FORMAT, "settings": self.settings(), "annotators": self.annotators_,
                "models": {key: WEIGHTS if weights is not None else None for key, weights in self.weights_.items()},
                "labels": self.labels_, "trained_on": self.n_train_, "agreement": self.agreement_}

    def save(self, folder: str | Path) -> Path:
        """Write the models and then student.json (last, atomically: a folder with it is complete); the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {"vocabulary": self.vocabulary_, "idf": self.idf_}
        for key, weights in self.weights_.items():
            if weights is not None:
                arrays[f"{key}.coef"], arrays[f"{key}.intercept"] = weights
        weights_tmp = folder / f".tmp-{os.getpid()}-{WEIGHTS}"
        with open(weights_tmp, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(weights_tmp, folder / WEIGHTS)
        tmp = folder / f".tmp-{os.getpid()}-{METADATA}"
        tmp.write_text(json.dumps(self.metadata(), indent=2))
        os.replace(tmp, folder / METADATA)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> StudentRater:
        folder = Path(folder)
        try:
            record = json.loads((folder / METADATA).read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{folder} is not a student rater folder (no readable {METADATA})") from error
        if record.get("format") != FORMAT:
            raise ValueError(f"{folder / METADATA} is not a {FORMAT} student rater")
        rater = cls(**record["settings"])
        rater.annotators_, rater.labels_ = record["annotators"], record["labels"]
        rater.n_train_, rater.agreement_ = record["trained_on"], record["agreement"]
        with np.load(folder / WEIGHTS) as arrays:
            rater._use_vocabulary(arrays["vocabulary"], arrays["idf"])
            rater.weights_ = {key: (arrays[f"{key}.coef"], arrays[f"{key}.intercept"]) if name else None
                              for key, name in record["models"].items()}
        return rater
