"""Student raters: fastText models trained on DataMan annotations that rate the whole corpus cheaply.

DataMan fine-tunes a small LM (Qwen2-1.5B) on its teacher's ratings and lets it annotate the corpus; here the
student is one fastText supervised model per criterion whose labels are the 1-5 ratings, and one whose labels
are the domains (word 1-2-grams, the classifier PreSelect and DCLM use). A criterion's score is the expected
rating under its model's label probabilities: continuous in [1, 5], so documents of one rating still rank.
`fit` keeps `held_out` of the annotations from training and measures there how well the students agree with
their teacher; the folder it saves holds one fastText `.bin` per model (none for a criterion the annotations
never vary: every text gets that rating) and `student.json` (settings, labels, annotator, that agreement).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from scoring.dataman import CRITERIA, column_name
from scoring.fasttext_classifier import one_line, save_model, train_supervised

METADATA = "student.json"
FORMAT = "mixforge-dataman-student/fasttext-1"
LABEL = "__label__"
DOMAIN = "domain"
# Measured on the demo teacher's ratings of 600 sample-corpus documents (450 to train on): at fastText's
# supervised defaults (lr 0.1, epoch 5) the students barely leave their prior (Overall Spearman 0.39, mean over
# the criteria 0.09); lr 1.0 x 10 epochs: 0.62, mean 0.50; lr 0.5 x 25 cost 1.8x for about as much (0.62, 0.53);
# dim 50 and 50k buckets gained nothing over 16 and 20k (a model: a row of 16 per training word and bucket,
# ~4 MB on 240 documents). On the demo run's 300 ratings (240 to train on) word bigrams overfit: mean Spearman
# 0.13-0.19 and domain accuracy at the majority's (0.33-0.45 vs 0.32) over three seeds; unigrams 0.32-0.35 and
# 0.45-0.53, so the students use unigrams.
DEFAULTS = {"lr": 1.0, "dim": 16, "epoch": 10, "word_ngrams": 1, "min_count": 1, "bucket": 20_000}
# fastText 0.9.2 draws its initial input matrix in ten blocks, one per training thread (densematrix.cc,
# uniformThread); here, on fewer threads, training these students stopped with "Encountered NaN" at random (the
# same set and settings on one thread: one run in two, at any lr down to 0.0125); on ten threads, none of ~130
# trainings did. Ten threads make training nondeterministic (Hogwild updates), as fastText on several is.
THREADS = 10


class StudentRater:
    """fit(texts, annotations) / predict(texts) -> {column: values} with `dataman_<criterion>` and `domain`."""

    def __init__(self, lr: float = DEFAULTS["lr"], dim: int = DEFAULTS["dim"], epoch: int = DEFAULTS["epoch"],
                 word_ngrams: int = DEFAULTS["word_ngrams"], min_count: int = DEFAULTS["min_count"],
                 bucket: int = DEFAULTS["bucket"], max_chars: int = 20_000, held_out: float = 0.2,
                 threads: int = THREADS, seed: int = 0) -> None:
        self.lr = lr
        self.dim = dim
        self.epoch = epoch
        self.word_ngrams = word_ngrams
        self.min_count = min_count
        self.bucket = bucket
        self.max_chars = max_chars
        self.held_out = held_out
        self.threads = threads
        self.seed = seed

    def settings(self) -> dict:
        return {"lr": self.lr, "dim": self.dim, "epoch": self.epoch, "word_ngrams": self.word_ngrams,
                "min_count": self.min_count, "bucket": self.bucket, "max_chars": self.max_chars,
                "held_out": self.held_out, "threads": self.threads, "seed": self.seed}

    def fit(self, texts: Sequence[str], annotations: pa.Table) -> StudentRater:
        """Train on annotations (ANNOTATION_SCHEMA rows, in the order of `texts`) but the held-out share, on which
        `agreement_` is measured (None when nothing is held out)."""
        if annotations.num_rows != len(texts):
            raise ValueError(f"{annotations.num_rows} annotations for {len(texts)} texts")
        if not 0 <= self.held_out < 1:
            raise ValueError(f"held_out must be within [0, 1), not {self.held_out}")
        order = np.random.default_rng(self.seed).permutation(len(texts))
        n_test = int(round(self.held_out * len(texts)))
        test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
        if len(train) == 0:
            raise ValueError("no annotations left to train the students on")
        lines = [one_line(texts[i], self.max_chars) for i in train]
        self.annotators_ = sorted(set(annotations.column("annotator").to_pylist()))  # e.g. the demo teacher's label
        self.labels_, self.models_ = {}, {}
        for key in (*CRITERIA, DOMAIN):
            values = [str(v) for v in annotations.column(key).take(pa.array(train)).to_pylist()]
            self.labels_[key] = sorted(set(values))
            index = {label: i for i, label in enumerate(self.labels_[key])}
            self.models_[key] = (None if len(index) == 1 else  # one label: nothing to learn, every text gets it
                                 train_supervised([(f"{LABEL}{index[v]}", line) for v, line in zip(values, lines,
                                                                                                 strict=True)],
                                                  {k: getattr(self, k) for k in (*DEFAULTS, "threads", "seed")})[0])
        self.n_train_ = len(train)
        self.agreement_ = (self.agreement([texts[i] for i in test], annotations.take(pa.array(test)))
                           if n_test else None)
        return self

    def probabilities(self, key: str, lines: list[str]) -> np.ndarray:
        """(texts, labels_[key]) probabilities of a criterion's ratings or of the domains, rows summing to 1."""
        out = np.zeros((len(lines), len(self.labels_[key])))
        if self.models_[key] is None:
            out[:, 0] = 1.0
            return out
        labels, probs = self.models_[key].predict(lines, k=-1)
        for row, (names, values) in enumerate(zip(labels, probs, strict=True)):
            out[row, [int(name[len(LABEL):]) for name in names]] = values
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        """Column name -> values: float32 `dataman_<criterion>` in [1, 5] (the expected rating), and `domain`
        (object array, the most probable)."""
        lines = [one_line(text, self.max_chars) for text in texts]
        out = {column_name(key): (self.probabilities(key, lines) @ np.asarray(self.labels_[key], float))
               .astype(np.float32) for key in CRITERIA}
        domains = np.asarray(self.labels_[DOMAIN], dtype=object)
        out[DOMAIN] = domains[self.probabilities(DOMAIN, lines).argmax(axis=1)] if lines else domains[:0]
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
                "models": {key: f"{key}.bin" if model is not None else None for key, model in self.models_.items()},
                "labels": self.labels_, "trained_on": self.n_train_, "agreement": self.agreement_}

    def save(self, folder: str | Path) -> Path:
        """Write the models and then student.json (last, atomically: a folder with it is complete); the folder."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for key, model in self.models_.items():
            if model is not None:
                save_model(model, folder / f"{key}.bin")
        tmp = folder / f".tmp-{os.getpid()}-{METADATA}"
        tmp.write_text(json.dumps(self.metadata(), indent=2))
        os.replace(tmp, folder / METADATA)
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> StudentRater:
        import fasttext

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
        rater.models_ = {key: fasttext.load_model(str(folder / name)) if name else None
                         for key, name in record["models"].items()}
        return rater
