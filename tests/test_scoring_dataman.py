"""DataMan rating: the prompt, parsing of well- and ill-formed answers, the OpenAI-compatible client against a
local stand-in server, the offline teacher on real documents, and student raters trained on its annotations."""

from __future__ import annotations

import json
import re
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pyarrow as pa
import pytest
from scipy.stats import spearmanr
from scoring_inputs import sample_docs

from scoring.dataman import (
    CRITERIA,
    DOMAINS,
    PROMPT_VERSION,
    REQUEST_TEMPLATE,
    ParseError,
    build_messages,
    cut_text,
    parse_rating,
)
from scoring.dataman_llm import AnnotationCache, LLMAnnotator
from scoring.dataman_teacher import OfflineTeacher
from scoring.students import StudentRater

NAMES = list(CRITERIA.values())


def test_prompt_is_datamans_request_with_definitions():
    messages = build_messages("Some text.")
    system, user = messages[0]["content"], messages[1]["content"]
    assert user.startswith("Please score the text on fourteen evaluation criteria and specify its domain:\nText: "
                           "Some text.\nDomain:_\n[1]Accuracy:_/5\n[2]Coherence:_/5")
    assert user.endswith("[13]Sensitivity:_/5\n[14]Overall Score:_/5")
    assert all(name in system for name in NAMES) and all(domain in system for domain in DOMAINS)
    assert "[H]Coding" in system and "[O]Other" in system
    assert PROMPT_VERSION.startswith("dataman-") and "{text}" in REQUEST_TEMPLATE
    long = "a" * 50 + "b" * 50
    assert cut_text(long, 20) == "a" * 10 + "\n...\n" + "b" * 10 and cut_text("short", 20) == "short"


def expected_rating(text: str) -> tuple[dict[str, int], str]:
    """The stand-in LLM's deterministic rating of a text: scores from its checksum, the domain by position."""
    seed = zlib.crc32(text.encode())
    scores = {key: 1 + (seed >> (2 * i)) % 5 for i, key in enumerate(CRITERIA)}
    return scores, DOMAINS[seed % len(DOMAINS)]


def answer_formats(text: str) -> list[str]:
    scores, domain = expected_rating(text)
    letter = "ABCDEFGHIJKLMNO"[DOMAINS.index(domain)]
    values = list(scores.values())
    return [
        # DataMan's template, filled in
        f"Domain: [{letter}]{domain}\n" + "\n".join(f"[{n}]{name}: {v}/5" for n, (name, v) in
                                                   enumerate(zip(NAMES, values, strict=True), 1)),
        # markdown with bold names and a chatty preamble
        "Here is my assessment:\n\n" + "\n".join(f"- **{name}**: {v}" for name, v in zip(NAMES, values, strict=True))
        + f"\n- **Domain**: {domain}",
        # JSON in a code fence, snake_case keys
        "```json\n" + json.dumps({**{key: v for key, v in scores.items()}, "domain": domain}) + "\n```",
        # DataMan's fine-tuned rater's own output: the domain, then 14 bare scores
        f"{letter}\n" + "\n".join(str(v) for v in values),
    ]


def test_parse_rating_formats_and_failures():
    text = "a document"
    scores, domain = expected_rating(text)
    for answer in answer_formats(text):
        rating = parse_rating(answer)
        assert rating.scores == scores and rating.domain == domain, answer
    filled = answer_formats(text)[0]
    with pytest.raises(ParseError, match="Overall Score"):
        parse_rating(filled.rsplit("\n", 1)[0])  # the last line missing
    with pytest.raises(ParseError, match="outside 1-5"):
        parse_rating(re.sub(r"\[1\]Accuracy: \d", "[1]Accuracy: 7", filled))
    with pytest.raises(ParseError, match="out of 10"):
        parse_rating(filled.replace(f"[2]Coherence: {scores['coherence']}/5", "[2]Coherence: 4/10"))
    domain_line = filled.split("\n", 1)[0]
    with pytest.raises(ParseError, match="domain"):
        parse_rating(filled.replace(domain_line, "Domain: ???"))
    with pytest.raises(ParseError):
        parse_rating("I cannot rate this text.")
    for written, meant in (("e-commerce", "Retail E-commerce"), ("[H]", "Coding"), ("programming", "Coding"),
                           ("**Law**", "Law"), ("E", "Technology")):
        assert parse_rating(filled.replace(domain_line, f"Domain: {written}")).domain == meant


class StandInLLM(BaseHTTPRequestHandler):
    """A stand-in for a real LLM server: speaks OpenAI's chat-completions protocol and answers with canned but
    varied ratings. Per document (by text): the first request may be refused (429 with Retry-After, or 500) or
    answered with garbage, later ones are answered properly in one of four formats; texts containing
    'UNRATABLE' always get an unparseable answer."""

    calls: dict[str, int] = {}
    in_flight = 0
    max_in_flight = 0
    requests = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cls = type(self)
        text = body["messages"][1]["content"].split("\nText: ", 1)[1].rsplit("\nDomain:_", 1)[0]
        with cls.lock:
            cls.requests += 1
            cls.in_flight += 1
            cls.max_in_flight = max(cls.max_in_flight, cls.in_flight)
            attempt = cls.calls.get(text, 0)
            cls.calls[text] = attempt + 1
        time.sleep(0.02)  # let requests overlap
        with cls.lock:
            cls.in_flight -= 1
        kind = zlib.crc32(text.encode()) % 7
        if attempt == 0 and kind == 0:
            return self._send(429, {"error": "rate limited"}, {"Retry-After": "0"})
        if attempt == 0 and kind == 1:
            return self._send(500, {"error": "overloaded"})
        if "UNRATABLE" in text or (attempt == 0 and kind == 2):
            content = "Sure! The text is quite good overall, maybe a four?"
        else:
            content = answer_formats(text)[kind % 4]
        self._send(200, {"id": "x", "object": "chat.completion", "model": body["model"],
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                      "finish_reason": "stop"}]})

    def _send(self, status: int, payload: dict, headers: dict | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def stand_in_llm():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    StandInLLM.calls, StandInLLM.requests, StandInLLM.max_in_flight = {}, 0, 0
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_llm_annotator_retries_parses_limits_and_caches(stand_in_llm, tmp_path, sample_corpus):
    docs = sample_docs(sample_corpus)
    texts = docs.text[:40].tolist() + ["UNRATABLE: a page of navigation links"]
    ids = [f"doc{i}" for i in range(len(texts))]
    annotator = LLMAnnotator(stand_in_llm, "stand-in", concurrency=4, max_attempts=3, backoff=0.01,
                             cache=tmp_path / "cache", flush_every=16, max_chars=2000)
    run = annotator.annotate(ids, texts)

    assert run.failed.keys() == {"doc40"} and "unparseable" in run.failed["doc40"]
    got = {row["id"]: row for row in run.annotations.to_pylist()}
    assert len(got) == 40
    for doc_id, text in zip(ids[:40], texts[:40], strict=True):
        scores, domain = expected_rating(cut_text(text, 2000))
        assert {key: got[doc_id][key] for key in CRITERIA} == scores and got[doc_id]["domain"] == domain
    refused_first = sum(1 for t in texts[:40] if zlib.crc32(cut_text(t, 2000).encode()) % 7 in (0, 1, 2))
    assert refused_first > 0 and run.requests == 40 + refused_first + 3  # one retry each; 3 tries for UNRATABLE
    assert 1 < StandInLLM.max_in_flight <= 4

    # a rerun asks only for the document that failed; the cache answers the rest
    before = StandInLLM.requests
    again = annotator.annotate(ids, texts)
    assert again.cached == 40 and StandInLLM.requests - before == 3
    assert again.annotations.sort_by("id").equals(run.annotations.sort_by("id"))
    assert AnnotationCache(tmp_path / "cache").read("another-prompt-version", annotator.annotator).num_rows == 0


def test_llm_annotator_gives_up_on_client_errors(tmp_path):
    class Refuses(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuses)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        run = LLMAnnotator(f"http://127.0.0.1:{server.server_address[1]}", "m", backoff=0.01).annotate(["a"], ["x"])
    finally:
        server.shutdown()
        server.server_close()
    assert run.requests == 1 and run.failed["a"].startswith("HTTP 401")


@pytest.fixture(scope="module")
def teacher_annotations(sample_corpus):
    """The offline teacher's ratings of 120 documents per source (TF-IDF domains: the corpus is multilingual)."""
    docs = sample_docs(sample_corpus).groupby("origin").head(120).reset_index(drop=True)
    teacher = OfflineTeacher(similarity="tfidf", max_chars=6000)
    return docs, teacher.annotate([f"d{i}" for i in range(len(docs))], docs.text.tolist())


def test_teacher_domains_follow_the_sources(teacher_annotations, sample_corpus):
    docs, annotations = teacher_annotations
    domain = np.asarray(annotations.column("domain").to_pylist(), dtype=object)

    def share(origin, names):
        return np.isin(domain[(docs.origin == origin).to_numpy()], names).mean()

    # measured (TF-IDF): python 0.97 Coding; PostgreSQL 0.9 Coding/Technology/Mathematics; Debian 0.7-0.8
    # Technology/Coding; fortunes 0.8 Other (no topic words) or Entertainment/Culture
    assert share("python-doc", ["Coding"]) >= 0.85
    assert share("postgresql-doc", ["Coding", "Technology"]) >= 0.75
    assert share("debian-handbook", ["Technology", "Coding"]) >= 0.55
    assert share("fortunes", ["Other", "Entertainment", "Culture"]) >= 0.7
    # embeddings (model2vec, English): on English documents the same picture, fortunes mostly Entertainment
    english = sample_docs(sample_corpus)
    english = english[english.lang == "en"].groupby("origin").head(30)
    embedded = np.asarray(OfflineTeacher(similarity="embeddings").domains(english.text.tolist()), dtype=object)
    origin = english.origin.to_numpy()
    assert np.isin(embedded[origin == "python-doc"], ["Coding", "Technology"]).mean() >= 0.9
    assert (embedded[origin == "fortunes"] == "Entertainment").mean() >= 0.5
    assert np.isin(embedded[origin == "debian-handbook"], ["Technology", "Coding"]).mean() >= 0.8


def test_teacher_criteria_move_with_what_they_measure(sample_corpus):
    docs = sample_docs(sample_corpus)
    english = docs[(docs.origin == "debian-reference") & (docs.lang == "en")].text.tolist()
    german = docs[(docs.origin == "debian-reference") & (docs.lang == "de")].text.tolist()
    base = next(t for t in english if 1500 < len(t) < 5000)
    lines = [[line for line in text.splitlines() if len(line) > 60][:8] for text in (base, max(german, key=len))]
    mixed = "\n\n".join(p for pair in zip(*lines, strict=True) for p in pair)  # English and German paragraphs
    repeated = "\n".join([base.split("\n")[0]] * 60)
    sensitive = base + "\n\n" + " ".join(["They kill and murder with guns, bombs and cocaine."] * 10)
    teacher = OfflineTeacher(similarity="tfidf")
    clean, mixed_r, repeated_r, sensitive_r = (r.scores for r in teacher.rate([base, mixed, repeated, sensitive]))
    assert clean["language_consistency"] == 5 and mixed_r["language_consistency"] <= 2
    assert repeated_r["semantic_density"] <= 2 < clean["semantic_density"]
    assert repeated_r["originality"] == 1 and clean["originality"] >= 4
    assert sensitive_r["sensitivity"] <= 2 and clean["sensitivity"] == 5
    fortunes = [r.scores["overall"] for r in teacher.rate(docs[docs.origin == "fortunes"].text[:50].tolist())]
    manuals = [r.scores["overall"] for r in teacher.rate(docs[docs.origin == "python-doc"].text[:50].tolist())]
    assert np.mean(fortunes) + 0.5 < np.mean(manuals)  # fragments rate lower overall


def test_students_learn_the_teacher(teacher_annotations, tmp_path):
    docs, annotations = teacher_annotations
    order = np.random.default_rng(0).permutation(len(docs))
    train, test = order[: len(order) * 3 // 4], order[len(order) * 3 // 4:]
    texts = docs.text.tolist()
    student = StudentRater().fit([texts[i] for i in train], annotations.take(pa.array(train)))
    student = StudentRater.load(student.save(tmp_path / "student.joblib"))
    predicted = student.predict([texts[i] for i in test])
    truth = annotations.take(pa.array(test))
    domain_agreement = (predicted["domain"] == np.asarray(truth.column("domain").to_pylist(), dtype=object)).mean()
    majority = max(np.unique(truth.column("domain").to_pylist(), return_counts=True)[1]) / len(test)
    rho = {key: spearmanr(predicted[f"dataman_{key}"], truth.column(key).to_numpy()).statistic
           for key in ("overall", "language_consistency", "professionalism", "topic_focus")}
    # measured: domain agreement ~0.85 (majority class ~0.45); rho overall ~0.75, others 0.5-0.8
    assert domain_agreement >= max(0.7, majority + 0.2)
    assert rho["overall"] >= 0.5 and min(rho.values()) >= 0.3
    assert all(p.dtype == np.float32 and p.min() >= 1.0 and p.max() <= 5.0
               for k, p in predicted.items() if k != "domain")
