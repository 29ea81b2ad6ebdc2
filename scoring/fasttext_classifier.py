"""A binary fastText text classifier: DCLM's generic quality classifier, and the scorer PreSelect trains.

DCLM (Li et al. 2024) trained fastText on positives (instruction data, ELI5) against random Common
Crawl with wordNgrams 2, lr 0.1, dim 100, epoch 5 and kept documents by the positive probability;
PreSelect (Shum et al. 2025) uses the same model with epoch 3. Both presets are below; every other
fastText parameter keeps fastText's supervised default unless given.

Texts are fed to fastText on one line (newlines become spaces, as both papers' scripts do) and cut to
`max_chars` characters, which bounds the cost of very long documents at little loss: the classifier
sees thousands of n-grams either way.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

POSITIVE = "__label__1"
NEGATIVE = "__label__0"

DCLM = {"lr": 0.1, "dim": 100, "epoch": 5, "word_ngrams": 2}
PRESELECT = {"lr": 0.1, "dim": 100, "epoch": 3, "word_ngrams": 2}

# Below this many example-epochs fastText at lr 0.1 may barely leave its starting point (measured here: 400
# documents x 3 epochs, every probability within 1e-3 of 0.5; 1,800 x 5 learned fine); the ranking still
# carries signal.
SMALL_TRAINING_SET = 5_000

# A training set given as a query rather than files starts with one of these (DuckDB accepts FROM-first).
SQL_KEYWORDS = ("SELECT", "WITH", "FROM")

# fastText can stop with "Encountered NaN" (tiny vocabularies, small buckets on few threads); each retry draws
# another initial matrix (a new seed), and from the second on also halves the learning rate.
NAN_RETRIES = 5


class TrainingError(ValueError):
    """The training set cannot train a classifier (one class missing, or fastText diverged every time)."""


def one_line(text: str | None, max_chars: int | None = None) -> str:
    """The text as fastText reads it: at most `max_chars` characters, newlines as spaces (fastText splits words
    on any whitespace itself, and reads one example per line)."""
    text = text or ""
    if max_chars:
        text = text[:max_chars]
    return text.replace("\n", " ")


def load_texts(source: str, run_dir: str | Path | None = None, limit: int | None = None,
               text_key: str = "text") -> list[str]:
    """Training texts from files (paths, folders, globs, fsspec URLs in any format the readers take) or from
    SQL over a run's shards (a SELECT whose first column, or `text`, holds the text; needs `run_dir`)."""
    if source.split(None, 1)[0].upper() in SQL_KEYWORDS:
        if run_dir is None:
            raise ValueError("SQL training sets need the run directory to query")
        from storage.catalog import open_catalog, query

        table = query(open_catalog(run_dir), source, limit=limit)
        column = table.column(text_key) if text_key in table.column_names else table.column(0)
        return [text for text in column.to_pylist() if text]
    from operators.reader import expand_inputs, reader_for

    texts: list[str] = []
    for path in expand_inputs([source]):
        for batch in reader_for(path, text_key=text_key)(path):
            texts.extend(text for text in batch.documents.column("text").to_pylist() if text)
            if limit is not None and len(texts) >= limit:
                return texts[:limit]
    return texts


def metadata_path(model: str | Path) -> Path:
    """The JSON beside a classifier (`model.bin` -> `model.json`) saying what it was trained on."""
    return Path(model).with_suffix(".json")


def save_metadata(model: str | Path, record: dict) -> Path:
    """Write what a classifier was trained on (its sources, or the verification that chose its seeds)."""
    import json

    path = metadata_path(model)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)
    return path


def train_supervised(examples: Sequence[tuple[str, str]], settings: dict):
    """fastText supervised on (label, one-line text) pairs, shuffled by `settings['seed']` (fastText reads its file
    in order); the model and the learning rate it trained at (lowered where it diverged). `settings`: lr, dim,
    epoch, word_ngrams, min_count, bucket, threads (None: every core), seed."""
    import fasttext

    order = np.random.default_rng(settings["seed"]).permutation(len(examples))
    with tempfile.TemporaryDirectory(prefix="mixforge-fasttext-") as folder:
        path = Path(folder) / "train.txt"
        with open(path, "w", encoding="utf-8") as handle:
            handle.writelines(f"{examples[i][0]} {examples[i][1]}\n" for i in order)
        lr, threads = settings["lr"], settings["threads"] or max(1, os.cpu_count() or 1)
        for attempt in range(NAN_RETRIES + 1):
            try:
                model = fasttext.train_supervised(
                    input=str(path), lr=lr, dim=settings["dim"], epoch=settings["epoch"],
                    wordNgrams=settings["word_ngrams"], minCount=settings["min_count"], bucket=settings["bucket"],
                    thread=threads, seed=settings["seed"] + attempt, verbose=0)
                return model, lr
            except RuntimeError as error:
                if "NaN" not in str(error) or attempt == NAN_RETRIES:
                    raise TrainingError(f"fastText training failed: {error}") from error
                # on small training sets (the demo's 240 ratings, when the DataMan students were fastText) the
                # NaN came at random seeds and at any lr, so a new seed draws another start, and after two such
                # tries a lower lr covers a real divergence
                if attempt >= 1:
                    lr /= 2
                warnings.warn(f"fastText diverged (NaN); retrying with seed {settings['seed'] + attempt + 1} and "
                              f"lr {lr:g}", stacklevel=3)


def save_model(model, path: str | Path) -> Path:
    """Write a fastText model atomically (its .bin keeps the training parameters)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    model.save_model(str(tmp))
    os.replace(tmp, path)
    return path


class FastTextClassifier:
    """fit(texts, labels) / predict_proba(texts) -> P(positive) / save / load, over fastText supervised."""

    def __init__(self, lr: float = 0.1, dim: int = 100, epoch: int = 5, word_ngrams: int = 2, min_count: int = 1,
                 bucket: int = 2_000_000, max_chars: int | None = 20_000, threads: int | None = None,
                 seed: int = 0) -> None:
        self.lr = lr
        self.dim = dim
        self.epoch = epoch
        self.word_ngrams = word_ngrams
        self.min_count = min_count
        self.bucket = bucket
        self.max_chars = max_chars
        self.threads = threads
        self.seed = seed

    @classmethod
    def dclm(cls, **overrides) -> FastTextClassifier:
        return cls(**{**DCLM, **overrides})

    @classmethod
    def preselect(cls, **overrides) -> FastTextClassifier:
        return cls(**{**PRESELECT, **overrides})

    def fit(self, texts: Sequence[str], labels: Sequence[bool] | np.ndarray) -> FastTextClassifier:
        labels = np.asarray(labels, dtype=bool)
        if len(texts) != len(labels):
            raise TrainingError(f"{len(texts)} texts but {len(labels)} labels")
        lines = [(POSITIVE if label else NEGATIVE, one_line(text, self.max_chars))
                 for text, label in zip(texts, labels, strict=True)]
        lines = [(label, line) for label, line in lines if line.strip()]
        if len({label for label, _ in lines}) < 2:
            raise TrainingError("training needs at least one positive and one negative non-empty text")
        self.model_, self.lr_used_ = train_supervised(lines, self.settings())
        self.n_train_ = len(lines)
        if self.n_train_ * self.epoch < SMALL_TRAINING_SET and self.lr <= 0.1:
            warnings.warn(f"fastText trained on {self.n_train_} texts x {self.epoch} epochs at lr {self.lr:g}: its "
                          "probabilities may stay near 0.5 (rank by them, or raise lr/epoch)", stacklevel=2)
        return self

    def settings(self) -> dict:
        """The fastText training parameters (train_supervised's `settings`)."""
        return {"lr": self.lr, "dim": self.dim, "epoch": self.epoch, "word_ngrams": self.word_ngrams,
                "min_count": self.min_count, "bucket": self.bucket, "threads": self.threads, "seed": self.seed}

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text, float32; an empty text gets fastText's answer for an empty line."""
        lines = [one_line(text, self.max_chars) for text in texts]
        if not lines:
            return np.zeros(0, dtype=np.float32)
        labels, probs = self.model_.predict(lines, k=1)  # two labels, softmax: the other one has 1 - p
        top = np.asarray(probs, dtype=np.float32).reshape(-1)
        positive = np.where(np.array([label[0] == POSITIVE for label in labels]), top, 1.0 - top)
        return np.clip(positive, 0.0, 1.0).astype(np.float32)  # fastText adds 1e-5 inside its log: 1.00001 happens

    def save(self, path: str | Path) -> Path:
        """Write the model atomically (fastText's .bin, which keeps the training parameters)."""
        return save_model(self.model_, path)

    @classmethod
    def load(cls, path: str | Path, max_chars: int | None = 20_000) -> FastTextClassifier:
        import fasttext

        model = fasttext.load_model(str(path))
        if set(model.get_labels()) != {POSITIVE, NEGATIVE}:
            raise ValueError(f"{path} is not a binary mixforge classifier (labels {model.get_labels()})")
        args = model.f.getArgs()
        classifier = cls(lr=args.lr, dim=args.dim, epoch=args.epoch, word_ngrams=args.wordNgrams,
                         min_count=args.minCount, bucket=args.bucket, max_chars=max_chars)
        classifier.model_ = model
        return classifier
