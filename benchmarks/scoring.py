"""Scoring speed. Loss scoring (PreSelect's family losses): documents/s of scoring.hf_lm.HFCausalLM per model size
against a plain transformers forward loop over the same windows (PreSelect's bpc loop: one document, one window at
a time) on the same texts, on CPU and, where torch sees one, on the GPU (wall seconds; `--loss-only` runs just
this). Then, one process on one core: our fastText scoring operator against raw fastText `predict` on the
same texts (the ratio is our overhead: Arrow in and out, text normalisation), the DataMan student raters, the
offline teacher, and PreSelect's byte n-gram losses. Last, DataMan's students: ours (scoring/students.py: a
logistic regression per criterion and one for the domain over one word TF-IDF) against ridge students (hashed
word 1-2-gram TF-IDF, 14 ridge regressions and a ridge domain classifier, the students before fastText, rebuilt
here as the baseline), both trained on the same demo-teacher annotations: annotation docs/s and agreement on the
same held-out documents.

Times are this process's CPU seconds (docs per CPU-second = per core), so a busy machine does not distort them.
Texts are the sample corpus's documents (`make sample`), repeated to the wanted count. Models are trained
here first (a DCLM-style classifier on tech docs vs fortunes, students on teacher annotations), which is not
timed.

    python benchmarks/scoring.py            # quick (default): < 2 min on 2 cores
    python benchmarks/scoring.py --full     # more documents, steadier numbers
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this file's folder comes first on sys.path and its name would shadow the `scoring` package.
sys.path[:] = [str(REPO), str(REPO / "tests")] + [p for p in sys.path
                                                  if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from scoring_inputs import sample_docs  # noqa: E402

from scoring.apply_fasttext import ScoreFastText  # noqa: E402
from scoring.apply_students import ScoreStudents  # noqa: E402
from scoring.byte_ngram import ByteNgramLM  # noqa: E402
from scoring.dataman import CRITERIA, column_name  # noqa: E402
from scoring.dataman_teacher import OfflineTeacher  # noqa: E402
from scoring.fasttext_classifier import FastTextClassifier, one_line  # noqa: E402
from scoring.students import StudentRater  # noqa: E402

SAMPLE = REPO / "data" / "sample"
BATCH = 4096


def timed(function, *args) -> float:
    """CPU seconds of this process: per-core throughput that other processes on the machine do not distort."""
    start = time.process_time()
    function(*args)
    return time.process_time() - start


def best_of(repeats: int, function, *args) -> float:
    return min(timed(function, *args) for _ in range(repeats))


LOSS_SIZES = ((64, 2), (128, 4), (256, 6))  # GPT-2 width, layers: ~0.3M, ~1.3M, ~6M parameters + embeddings


def plain_loop(model, tokenizer, texts: list[str], device: str, window: int = 1900, stride: int = 512) -> float:
    """PreSelect's bpc loop (after llm-compression-intelligence/code/evaluation): windows one at a time."""
    import torch

    total = 0.0
    for text in texts:
        data = torch.tensor([tokenizer.bos_token_id] + tokenizer(text)["input_ids"], device=device)
        begin, prev_end = 0, 0
        while True:
            end = min(begin + window + 1, len(data))
            ids, target_len = data[begin:end], end - prev_end
            with torch.inference_mode():
                logits = model(ids[None, :-1]).logits[0].float()
            losses = torch.nn.functional.cross_entropy(logits, ids[1:], reduction="none")
            total += losses[-min(target_len, len(ids) - 1):].sum().item()
            prev_end, begin = end, begin + stride
            if end >= len(data):
                break
    return total


def loss_rows(texts: list[str], work: Path) -> list[tuple[str, float, float]]:
    """(model and device, our docs/s, plain loop docs/s) per model size and device."""
    import torch
    from scoring_inputs import train_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    from scoring.hf_lm import HFCausalLM

    tokenizer = train_tokenizer(texts[:200], work / "tokenizer", vocab_size=2048)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for width, layers in LOSS_SIZES:
        folder = work / f"gpt2-{width}"
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=width, n_layer=layers, n_head=4,
                                   n_positions=2048)).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        for device in devices:
            ours = HFCausalLM(folder, device=device, dtype="float32")
            ours.losses(texts[:2])  # load and warm up
            start = time.perf_counter()
            total = ours.losses(texts).loss.sum()
            our_seconds = time.perf_counter() - start
            start = time.perf_counter()
            reference = plain_loop(ours._model, ours._tokenizer, texts, ours.device_)
            plain_seconds = time.perf_counter() - start
            assert abs(total - reference) <= 1e-3 * abs(reference), (total, reference)  # the same losses
            params = sum(p.numel() for p in ours._model.parameters()) / 1e6
            rows.append((f"GPT-2 {width}x{layers} ({params:.1f}M) on {device}", len(texts) / our_seconds,
                         len(texts) / plain_seconds))
    return rows


N_ANNOTATED = 600  # demo-teacher annotations the students learn from (20% held out)


class RidgeStudents:
    """The first students, as the baseline: hashed word 1-2-gram TF-IDF (2^18 features), one ridge
    regression per criterion (clipped to 1-5) and a ridge (one-vs-rest) domain classifier."""

    def fit(self, texts: list[str], annotations: pa.Table) -> RidgeStudents:
        from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
        from sklearn.linear_model import Ridge, RidgeClassifier
        from sklearn.pipeline import make_pipeline

        self.features = make_pipeline(HashingVectorizer(ngram_range=(1, 2), n_features=2**18, alternate_sign=False,
                                                        norm=None), TfidfTransformer(sublinear_tf=True))
        x = self.features.fit_transform([t[:20_000] for t in texts])
        self.ratings = {key: Ridge(solver="sparse_cg").fit(x, np.asarray(annotations.column(key), float))
                        for key in CRITERIA}
        self.domain = RidgeClassifier(alpha=0.3).fit(x, np.asarray(annotations.column("domain").to_pylist(), object))
        return self

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        x = self.features.transform([t[:20_000] for t in texts])
        out = {column_name(key): np.clip(model.predict(x), 1, 5) for key, model in self.ratings.items()}
        out["domain"] = self.domain.predict(x)
        return out


def student_rows(students: StudentRater, texts: list[str], annotations: pa.Table, corpus: list[str],
                 students_rate: float) -> None:
    """Our students against ridge students trained on the same annotations: agreement with the teacher
    on the same held-out documents, and annotation docs/s (predict on `corpus`, one core)."""
    from scipy.stats import spearmanr

    order = np.random.default_rng(students.seed).permutation(len(texts))  # StudentRater.fit's split
    n_test = int(round(students.held_out * len(texts)))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    ridge = RidgeStudents().fit([texts[i] for i in train], annotations.take(train))
    truth = annotations.take(test)
    print(f"\nDataMan students, {len(train)} demo-teacher annotations to learn from, {n_test} held out; "
          f"annotation on {len(corpus):,} documents, one core")
    print("| students | docs/s | Overall Spearman | mean Spearman (14) | within 1 (mean) | domain accuracy |")
    print("|---|--:|--:|--:|--:|--:|")
    for name, model, rate in (("logistic regressions over one TF-IDF (ours)", students, students_rate),
                              ("ridge on hashed 1-2-gram TF-IDF (before)", ridge,
                               len(corpus) / best_of(2, ridge.predict, corpus))):
        guess = model.predict([texts[i] for i in test])
        rho = {key: spearmanr(guess[column_name(key)], truth.column(key).to_numpy()).statistic for key in CRITERIA}
        within = np.mean([(np.abs(guess[column_name(key)] - truth.column(key).to_numpy()) <= 1).mean()
                          for key in CRITERIA])
        accuracy = (guess["domain"] == np.asarray(truth.column("domain").to_pylist(), object)).mean()
        print(f"| {name} | {rate:,.0f} | {rho['overall']:.2f} | {np.nanmean(list(rho.values())):.2f} | "
              f"{within:.2f} | {accuracy:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer documents (the default)")
    parser.add_argument("--full", action="store_true", help="more documents")
    parser.add_argument("--loss-only", action="store_true", help="only the loss-scoring comparison")
    args = parser.parse_args()
    n_docs = 40_000 if args.full else 10_000
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    docs = sample_docs(SAMPLE)
    loss_texts = [t[:6000] for t in docs.text.tolist()[: 256 if args.full else 48]]
    with tempfile.TemporaryDirectory() as work:
        rows = loss_rows(loss_texts, Path(work))
    print(f"Loss scoring: {len(loss_texts)} documents (up to 6,000 characters, whole, in 1,900/512 windows), "
          "wall time, same losses both ways")
    width = max(len(name) for name, _, _ in rows)
    for name, ours, plain in rows:
        print(f"  {name:<{width}}  {ours:>8,.1f} docs/s   plain loop {plain:>8,.1f} docs/s   {ours / plain:5.2f}x")
    print()
    if args.loss_only:
        return
    texts = (docs.text.tolist() * (n_docs // len(docs) + 1))[:n_docs]
    table = pa.table({"text": pa.array(texts, pa.large_string())})
    batches = [table.slice(i, BATCH) for i in range(0, n_docs, BATCH)]
    mean_chars = sum(map(len, texts)) / n_docs
    print(f"{n_docs:,} documents of the sample corpus, {mean_chars:,.0f} characters on average; one core\n")

    with tempfile.TemporaryDirectory() as work:
        tech = docs[docs.origin.isin(["python-doc", "postgresql-doc"])].text.tolist()[:800]
        fortunes = docs[docs.origin == "fortunes"].text.tolist()[:800]
        classifier = FastTextClassifier.dclm(bucket=200_000, threads=1, max_chars=20_000).fit(
            tech + fortunes, [True] * len(tech) + [False] * len(fortunes))
        model = str(classifier.save(Path(work) / "dclm.bin"))
        annotated = docs.text.tolist()[:N_ANNOTATED]
        annotations = OfflineTeacher(similarity="tfidf").annotate([str(i) for i in range(N_ANNOTATED)], annotated)
        student_rater = StudentRater().fit(annotated, annotations)
        student = str(student_rater.save(Path(work) / "students"))

        operator = ScoreFastText(model, column="preselect", max_chars=20_000)
        raw = operator.classifier.model_
        lines = [one_line(t, 20_000) for t in texts]  # what fastText itself needs: one line per text

        ours = best_of(3, lambda: [operator(b) for b in batches])
        theirs = best_of(3, lambda: raw.predict(lines, k=2))
        theirs_with_prep = best_of(3, lambda: raw.predict([one_line(t, 20_000) for t in texts], k=2))
        rows = [("fastText scoring operator (Arrow batch in/out)", n_docs / ours),
                ("raw fastText predict, texts already one line", n_docs / theirs),
                ("raw fastText predict + newline/cut preparation", n_docs / theirs_with_prep)]

        students = ScoreStudents(student)
        few = batches[0].slice(0, 2000)
        students_rate = few.num_rows / best_of(2, students, few)
        rows.append(("DataMan students (15 logistic regressions, one TF-IDF) operator", students_rate))
        teacher = OfflineTeacher(similarity="tfidf")
        sample = texts[:500]
        rows.append(("demo teacher (heuristics + TF-IDF domain; not DataMan)",
                     len(sample) / timed(teacher.rate, sample)))
        lm = ByteNgramLM(order=4, max_bytes=4096).fit(texts[:500])
        scored = texts[:2000]
        rows.append(("byte 4-gram LM bits/byte (4 kB/doc), per model", len(scored) / timed(lm.bits_per_byte, scored)))

    width = max(len(name) for name, _ in rows)
    for name, rate in rows:
        print(f"{name:<{width}}  {rate:>10,.0f} docs/s")
    print(f"\nscoring operator / raw fastText predict: {theirs / ours:.2f}x the speed "
          f"({ours / theirs:.2f}x the time); against predict with its own text preparation: "
          f"{theirs_with_prep / ours:.2f}x")
    student_rows(student_rater, annotated, annotations, few.column("text").to_pylist(), students_rate)


if __name__ == "__main__":
    main()
