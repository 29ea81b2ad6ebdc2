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
from scoring_inputs import sample_docs

from scoring.dataman import (
    CRITERIA,
    DOMAINS,
    PROMPT_VERSIONS,
    RATER_REQUEST,
    TEACHER_REQUEST,
    TEACHER_SYSTEM,
    ParseError,
    build_messages,
    parse_rater,
    parse_teacher,
    truncate,
)
from scoring.dataman_hf import CHATML, HFRater
from scoring.dataman_llm import AnnotationCache, LLMAnnotator
from scoring.dataman_teacher import OfflineTeacher
from scoring.students import StudentRater

NAMES = list(CRITERIA.values())
LETTERS = "ABCDEFGHIJKLMNO"
# sha256 of DataMan's English texts, computed from pengr/DataMan @574f09c: dataman_annotate.py
# REQUEST_TEMPLATES["en"]["all_rating"]; sft/prepare_data.py GPT_REQUEST_TEMPLATE and the 'gpt' system prompt
DATAMAN_SHA256 = {
    "rater": "9fcf48afade84ad3102e8eaebbce0a7487684a0a0c897a1c27253cc08337569b",
    "teacher": "8c72f03f09b797a9509674c96fb764cfb1c0dc7374092b41fa5c63b5ace966c6",
    "teacher_system": "cb561b0080f69dc719c293e63f9744ae18044bc295b19dca470a7def43ec19e7",
}


def sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_prompts_are_datamans_text():
    assert sha256(RATER_REQUEST) == DATAMAN_SHA256["rater"]
    assert sha256(TEACHER_REQUEST) == DATAMAN_SHA256["teacher"]
    assert sha256(TEACHER_SYSTEM) == DATAMAN_SHA256["teacher_system"]
    rater = build_messages("Some text.", "rater")
    assert rater == [{"role": "system", "content": "You are a helpful assistant."},
                     {"role": "user", "content": RATER_REQUEST.format(text="Some text.")}]
    assert rater[1]["content"].startswith("Please score the text on fourteen evaluation criteria and specify its "
                                          "domain:\nText: Some text.\nDomain:_\n[1]Accuracy:_/5")
    teacher = build_messages("Some text.", "teacher")
    assert teacher[0]["content"] == TEACHER_SYSTEM and "\nText: Some text.\nDomain Types: [A]Medicine" in \
        teacher[1]["content"]
    assert PROMPT_VERSIONS["rater"] != PROMPT_VERSIONS["teacher"]


def test_truncation_is_datamans():
    text = "a" * 15_000 + "b" * 15_000
    assert truncate(text) == "a" * 10_000 + "b" * 10_000  # 20,000 characters: head and tail
    assert truncate('"..."Quoted start\n![](//img.png)\nrest') == "Quoted start\nrest"  # DataMan's filtering

    class Words:  # a tokenizer that splits on spaces (transformers' tokenize / convert_tokens_to_string)
        def tokenize(self, text):
            return text.split(" ")

        def convert_tokens_to_string(self, tokens):
            return " ".join(tokens)

    words = " ".join(f"w{i}" for i in range(2000))
    cut = truncate(words, Words()).split(" ")
    assert len(cut) == 1895 and cut[947] == "..." and cut[:947] == [f"w{i}" for i in range(947)]
    assert cut[-1] == "w1999" and truncate("few words", Words()) == "few words"


def teacher_answer(scores: list[float], letter: str, style: int = 0) -> str:
    """Answers in the shapes GPT-4o gives DataMan's teacher prompt."""
    names = ["Textual Accuracy", "Semantic Coherence", "Language Consistency", "Ratio of Valid Semantic Content",
             "Novelty of Knowledge", "Topic Focus", "Creative Expression Ratio", "Professionalism",
             "Style Consistency", "Richness of Grammatical Structures", "Standardization of Structure",
             "Non-repetitiveness of Content", "Appropriateness of Sensitive Content", "Overall Score"]
    if style == 0:
        lines = [f"[{n}]{name}: {v:g}/5" for n, (name, v) in enumerate(zip(names, scores, strict=True), 1)]
        return "\n".join(lines) + f"\nDomain: [{letter}]{DOMAINS[LETTERS.index(letter)]}"
    if style == 1:
        lines = [f"{n}. **{name}**: The text reads well. **{v:g}/5**" for n, (name, v) in
                 enumerate(zip(names, scores, strict=True), 1)]
        return "Let's think step by step.\n\n" + "\n".join(lines) + f"\n\n**Domain Type:** **{letter}** - fits."
    lines = [f"{n}) {name} ({v:g}/5)" for n, (name, v) in enumerate(zip(names, scores, strict=True), 1)]
    return "\n".join(lines) + f"\nThe domain is [{letter}]."


def expected_rating(text: str) -> tuple[dict[str, int], str]:
    """The stand-in LLM's deterministic rating of a text: scores from its checksum, the domain by position."""
    seed = zlib.crc32(text.encode())
    scores = {key: 1 + (seed >> (2 * i)) % 5 for i, key in enumerate(CRITERIA)}
    return scores, DOMAINS[seed % len(DOMAINS)]


def test_teacher_answers_follow_datamans_rules():
    scores = [4, 5, 3, 2, 1, 4, 3, 5, 4, 3, 2, 5, 5, 4]
    for style in range(3):
        rating = parse_teacher(teacher_answer(scores, "H", style))
        assert list(rating.scores.values()) == scores and rating.domain == "Coding", style
    assert list(parse_teacher(teacher_answer([2.5, 3.5] + scores[2:], "B")).scores.values())[:2] == [2, 4]
    twice = teacher_answer(scores, "E") + "\n\nSummary:\n" + teacher_answer(scores, "E")
    assert parse_teacher(twice).domain == "Technology"  # 28 scores, the same twice: accepted as 14
    for bad, reason in ((teacher_answer(scores, "E").replace("[3]Language Consistency: 3/5", "[3]Language "
                                                             "Consistency: N/A"), "N/A"),
                        ("\n".join(teacher_answer(scores, "E").split("\n")[1:]), "13 scores"),
                        (twice.replace("[1]Textual Accuracy: 4/5", "[1]Textual Accuracy: 1/5", 1), "28 scores"),
                        (teacher_answer(scores, "E") + " Or maybe [H].", "2 domains"),
                        (teacher_answer(scores, "E").rsplit("\n", 1)[0], "0 domains"),
                        ("I cannot rate this text.", "0 scores")):
        with pytest.raises(ParseError, match=re.escape(reason)):
            parse_teacher(bad)


def test_rater_answers_follow_datamans_reading():
    assert parse_rater("H\n" + "\n".join("45345345345345"[:14])).domain == "Coding"
    rating = parse_rater("E\n1\n2\n3\n4\n5\n1\n2\n3\n4\n5\n1\n2\n3\n4\n")
    assert rating.domain == "Technology" and rating.scores["overall"] == 4 and rating.scores["accuracy"] == 1
    assert parse_rater("H\n" + "\n".join("4" * 14) + "\n3\n2").scores["overall"] == 4  # later lines ignored
    for bad, reason in (("H\n" + "\n".join("4" * 13), "14 lines"), ("Z\n" + "\n".join("4" * 14), "unknown domain"),
                        ("H\n" + "\n".join("4" * 13) + "\n7", "whole numbers"), ("N/A", "1 lines")):
        with pytest.raises(ParseError, match=reason):
            parse_rater(bad)


class StandInLLM(BaseHTTPRequestHandler):
    """A stand-in for a real LLM server (none can run here): speaks OpenAI's chat-completions protocol and answers
    DataMan's teacher prompt with canned but varied ratings. Per document (by text): the first request may be
    refused (429 with Retry-After, or 500) or answered with garbage, later ones are answered properly in one of
    three shapes; texts containing 'UNRATABLE' always get an unparseable answer."""

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
        text = body["messages"][1]["content"].split("\nText: ", 1)[1].rsplit("\nDomain Types: ", 1)[0]
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
            scores, domain = expected_rating(text)
            content = teacher_answer(list(scores.values()), LETTERS[DOMAINS.index(domain)], kind % 3)
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
    assert annotator.max_tokens == 4096 and annotator.temperature == 0.0  # DataMan's teacher request
    run = annotator.annotate(ids, texts)

    assert run.failed.keys() == {"doc40"} and "unparseable answer (0 scores, not 14)" in run.failed["doc40"]
    got = {row["id"]: row for row in run.annotations.to_pylist()}
    assert len(got) == 40
    for doc_id, text in zip(ids[:40], texts[:40], strict=True):
        scores, domain = expected_rating(truncate(text, max_chars=2000))
        assert {key: got[doc_id][key] for key in CRITERIA} == scores and got[doc_id]["domain"] == domain
    refused_first = sum(1 for t in texts[:40] if zlib.crc32(truncate(t, max_chars=2000).encode()) % 7 in (0, 1, 2))
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

    # The demo teacher's zero-shot domains from one-line glosses of DataMan's domain names (nothing fitted to this
    # corpus). Measured (TF-IDF): python 0.85 Coding; PostgreSQL 0.42 Coding; Debian 0.4 Technology/Coding;
    # fortunes 0.88 Other
    assert share("python-doc", ["Coding"]) >= 0.75
    assert share("postgresql-doc", ["Coding", "Technology"]) >= 0.35
    assert share("debian-handbook", ["Technology", "Coding"]) >= 0.3
    assert share("fortunes", ["Other", "Entertainment", "Culture"]) >= 0.8
    # embeddings (model2vec, English): python 0.9 Coding/Technology, Debian handbook 0.94, fortunes 0.5 Entertainment
    english = sample_docs(sample_corpus)
    english = english[english.lang == "en"].groupby("origin").head(30)
    embedded = np.asarray(OfflineTeacher(similarity="embeddings").domains(english.text.tolist()), dtype=object)
    origin = english.origin.to_numpy()
    assert np.isin(embedded[origin == "python-doc"], ["Coding", "Technology"]).mean() >= 0.8
    assert np.isin(embedded[origin == "fortunes"], ["Entertainment", "Other"]).mean() >= 0.6
    assert np.isin(embedded[origin == "debian-handbook"], ["Technology", "Coding"]).mean() >= 0.8
    assert OfflineTeacher.annotator.startswith("demo-teacher") and "not DataMan" in OfflineTeacher.annotator


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
    texts = docs.text.tolist()
    student = StudentRater(held_out=0.25).fit(texts, annotations)
    folder = student.save(tmp_path / "student")
    loaded = StudentRater.load(folder)
    record = json.loads((folder / "student.json").read_text())
    same = json.dumps(record["agreement"])  # as JSON: a criterion the held-out documents never vary has rho NaN
    assert json.dumps(loaded.agreement_) == json.dumps(student.agreement_) == same and record["trained_on"] == 450
    assert record["annotators"] == [OfflineTeacher.annotator] and sorted(record["agreement"]) == sorted(
        [*CRITERIA, "domain"])
    # the held-out documents are the ones fit left out: agreement recomputed on them is the recorded one
    test = np.sort(np.random.default_rng(0).permutation(len(texts))[:150])
    truth = annotations.take(pa.array(test))
    assert json.dumps(loaded.agreement([texts[i] for i in test], truth)) == same
    predicted = loaded.predict([texts[i] for i in test])
    assert all(np.array_equal(predicted[k], v) for k, v in student.predict([texts[i] for i in test]).items())
    agreement = record["agreement"]
    majority = max(np.unique(truth.column("domain").to_pylist(), return_counts=True)[1]) / len(test)
    rho = {key: agreement[key]["spearman"] for key in ("overall", "language_consistency", "professionalism",
                                                        "topic_focus")}
    # measured (450 documents to learn from; training is deterministic): rho overall 0.53, the others 0.19-0.79
    # (language consistency the lowest), mean over the criteria 0.54; Overall within one point 0.97, exact 0.85;
    # domain 0.71 (majority class 0.42)
    assert rho["overall"] >= 0.5 and min(rho.values()) >= 0.15
    assert agreement["overall"]["within_1"] >= 0.95 and agreement["overall"]["exact"] >= 0.85
    assert agreement["domain"]["accuracy"] >= majority + 0.15
    assert all(p.dtype == np.float32 and p.min() >= 1.0 and p.max() <= 5.0
               for k, p in predicted.items() if k != "domain")
    assert len(np.unique(predicted["dataman_overall"])) > 100  # expected ratings: continuous, documents rank


# what the stand-in rater learns to answer (one score repeated keeps a two-layer model's job within seconds)
RATED = {"python-doc": ("H", [5] * 14), "fortunes": ("F", [2] * 14)}


@pytest.fixture(scope="module")
def tiny_rater(sample_corpus, tmp_path_factory):
    """A DataMan-style rater fine-tuned here: a small GPT-2 (transformers, built from a config) trained a few
    hundred steps on DataMan's rater prompt (ChatML, as DataMan's Qwen2 raters) to answer like the released raters:
    the domain letter, then 14 scores, one a line (Coding for python-doc, Entertainment for fortunes)."""
    import torch
    from scoring_inputs import train_tokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("rater")
    docs = sample_docs(sample_corpus)
    docs = docs[docs.origin.isin(list(RATED)) & (docs.lang == "en")].groupby("origin").head(60)
    docs = docs.assign(text=docs.text.str.slice(0, 200)).reset_index(drop=True)
    train = docs.groupby("origin").head(40)
    tokenizer = train_tokenizer(train.text.tolist() + [RATER_REQUEST, CHATML], folder, vocab_size=400)
    tokenizer.chat_template = CHATML
    examples = []
    for text, origin in zip(train.text, train.origin, strict=True):
        prompt = tokenizer.apply_chat_template(build_messages(text, "rater", tokenizer), tokenize=False,
                                               add_generation_prompt=True)
        letter, scores = RATED[origin]
        answer = "\n".join([letter, *map(str, scores)])
        prompt_ids = tokenizer(prompt)["input_ids"]
        examples.append((prompt_ids, tokenizer(answer)["input_ids"] + [tokenizer.eos_token_id]))
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=1024))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(200):
        batch = [examples[i] for i in rng.integers(0, len(examples), size=8)]
        width = max(len(p) + len(a) for p, a in batch)
        ids = torch.full((8, width), tokenizer.pad_token_id)
        labels = torch.full((8, width), -100)
        for row, (p, a) in enumerate(batch):
            ids[row, :len(p) + len(a)] = torch.tensor(p + a)
            labels[row, len(p):len(p) + len(a)] = torch.tensor(a)
        out = model(input_ids=ids, labels=labels)
        # the domain letter comes once per answer, after the prompt: weigh it up so a few hundred steps learn it
        first = torch.tensor([len(p) - 1 for p, _ in batch])
        letter = torch.nn.functional.cross_entropy(out.logits[torch.arange(8), first],
                                                   torch.tensor([a[0] for _, a in batch]))
        loss = out.loss + letter
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, docs.groupby("origin").tail(20).reset_index(drop=True)


def test_local_hf_rater_generates_parses_batches_and_caches(tiny_rater, tmp_path):
    folder, held_out = tiny_rater
    ids = [f"d{i}" for i in range(len(held_out))] + ["garbage"]
    texts = held_out.text.tolist() + [""]
    rater = HFRater(folder, batch_size=8, cache=tmp_path / "cache")
    prompt = rater.prompts([texts[0]])[0]
    assert RATER_REQUEST.format(text=texts[0]) in prompt and prompt.endswith("<|im_start|>assistant\n")
    run = rater.annotate(ids, texts, use_ray=False)
    assert run.requests == 6 == rater.generated  # 41 documents in batches of 8
    got = {row["id"]: row for row in run.annotations.to_pylist()}
    # a two-layer model trained for seconds rates poorly (measured: 19 of 41 answers acceptable); what is tested is
    # that every answer is accepted or rejected by DataMan's reading, accepted ones exactly as written
    assert len(got) + len(run.failed) == len(ids) and 5 <= len(got) < len(ids)
    for doc_id in got:
        assert got[doc_id]["domain"] == {"H": "Coding", "F": "Entertainment"}[got[doc_id]["raw"].split()[0]]
        assert [got[doc_id][key] for key in CRITERIA] == [int(line) for line in got[doc_id]["raw"].split()[1:15]]
    assert all(reason.startswith("rejected") for reason in run.failed.values())
    again = HFRater(folder, batch_size=8, cache=tmp_path / "cache").annotate(ids, texts, use_ray=False)
    assert again.cached == len(got) and again.requests == -(-len(run.failed) // 8)  # only the rejected, batched
    assert again.annotations.num_rows == len(got)
    assert set(again.annotations.column("prompt_version").to_pylist()) == {PROMPT_VERSIONS["rater"]}
