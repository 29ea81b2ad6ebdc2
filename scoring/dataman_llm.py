"""DataMan ratings from an LLM behind any OpenAI-compatible chat-completions endpoint (vLLM, TGI, llama.cpp's
server, a hosted API), with retries, a concurrency limit and a Parquet cache.

Each document is one request (`POST {base_url}/chat/completions`) carrying one of DataMan's prompts
(scoring.dataman): `teacher` (prepare_data.py's request, temperature 0, 4,096 tokens) for an
instruction-tuned LLM, or `rater` (dataman_annotate.py's request) for a served DataMan rater. A request
is retried with exponential backoff and jitter on connection errors, timeouts, 408/409/429 and 5xx
(honouring Retry-After), and also when DataMan's rules reject the answer (a sampled answer may be
well-formed the next time); other 4xx fail at once. At most `concurrency`
requests are in flight. Finished annotations go to the cache every `flush_every` documents, so an
interrupted run loses little and a rerun asks only for what is missing.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from scoring.dataman import (
    ANNOTATION_SCHEMA,
    MAX_CHARS,
    PARSERS,
    PROMPT_VERSIONS,
    RATER_MAX_TOKENS,
    TEACHER_SAMPLING,
    ParseError,
    Rating,
    Template,
    annotation_table,
    build_messages,
)
from storage.shards import write_table_atomic

RETRY_STATUS = {408, 409, 429}


class AnnotationCache:
    """Annotations kept as Parquet parts in a folder, keyed by (document id, prompt version, annotator)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def read(self, prompt_version: str, annotator: str) -> pa.Table:
        parts = sorted(self.folder.glob("part-*.parquet"))
        if not parts:
            return ANNOTATION_SCHEMA.empty_table()
        table = pa.concat_tables([pq.read_table(p, schema=ANNOTATION_SCHEMA) for p in parts])
        mask = pc.and_(pc.equal(table.column("prompt_version"), prompt_version),
                       pc.equal(table.column("annotator"), annotator))
        return table.filter(mask)

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            name = f"part-{time.time_ns()}-{os.getpid()}.parquet"
            write_table_atomic(table.cast(ANNOTATION_SCHEMA), self.folder / name)


@dataclass
class AnnotationRun:
    """What one `annotate` call produced: the annotations (cached and new) and the documents that failed."""

    annotations: pa.Table
    failed: dict[str, str] = field(default_factory=dict)  # id -> last error
    requests: int = 0
    cached: int = 0


def pending_documents(cache: AnnotationCache | None, prompt_version: str, annotator: str, ids: list[str],
                      texts: list[str]) -> tuple[pa.Table, list[tuple[str, str]]]:
    """(the cached annotations of these documents, one per id; the (id, text) pairs still to annotate)."""
    cached = cache.read(prompt_version, annotator) if cache else ANNOTATION_SCHEMA.empty_table()
    cached = cached.filter(pc.is_in(cached.column("id"), pa.array(list(set(ids)), pa.string())))
    cached = cached.take(pa.array(first_per_id(cached.column("id").to_pylist()), pa.int64()))
    have = set(cached.column("id").to_pylist())
    return cached, [(i, t) for i, t in dict(zip(ids, texts, strict=True)).items() if i not in have]


class LLMAnnotator:
    """annotate(ids, texts) -> AnnotationRun, asking the endpoint for what the cache does not hold."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, template: Template = "teacher",
                 concurrency: int = 8, max_attempts: int = 5, backoff: float = 1.0, max_backoff: float = 60.0,
                 timeout: float = 120.0, temperature: float = TEACHER_SAMPLING["temperature"],
                 max_tokens: int | None = None, max_chars: int = MAX_CHARS,
                 cache: AnnotationCache | str | Path | None = None, flush_every: int = 256) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.template = template
        self.concurrency = concurrency
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens or (TEACHER_SAMPLING["max_tokens"] if template == "teacher" else RATER_MAX_TOKENS)
        self.max_chars = max_chars
        self.cache = AnnotationCache(cache) if isinstance(cache, str | Path) else cache
        self.flush_every = flush_every
        self.annotator = f"llm:{model}"
        self.prompt_version = PROMPT_VERSIONS[template]

    def annotate(self, ids: list[str], texts: list[str]) -> AnnotationRun:
        cached, todo = pending_documents(self.cache, self.prompt_version, self.annotator, ids, texts)
        run = AnnotationRun(annotations=cached, cached=cached.num_rows)
        new = asyncio.run(self._annotate_all(todo, run)) if todo else []
        run.annotations = pa.concat_tables([cached, *new]).cast(ANNOTATION_SCHEMA)
        return run

    async def _annotate_all(self, todo: list[tuple[str, str]], run: AnnotationRun) -> list[pa.Table]:
        import httpx

        limit = asyncio.Semaphore(self.concurrency)
        pending: list[tuple[str, Rating, str]] = []
        written: list[pa.Table] = []
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

        def flush() -> None:
            if pending:
                table = annotation_table([p[0] for p in pending], [p[1] for p in pending], self.annotator,
                                         self.prompt_version, raw=[p[2] for p in pending])
                if self.cache:
                    self.cache.write(table)
                written.append(table)
                pending.clear()

        async def one(client: httpx.AsyncClient, doc_id: str, text: str) -> None:
            async with limit:
                result = await self._rate(client, text, run)
            if isinstance(result, str):
                run.failed[doc_id] = result
                return
            pending.append((doc_id, *result))
            if len(pending) >= self.flush_every:
                flush()

        async with httpx.AsyncClient(timeout=self.timeout, headers=headers,
                                     limits=httpx.Limits(max_connections=self.concurrency)) as client:
            await asyncio.gather(*(one(client, doc_id, text) for doc_id, text in todo))
        flush()
        return written

    async def _rate(self, client, text: str, run: AnnotationRun) -> tuple[Rating, str] | str:
        """(rating, raw answer), or the last error after max_attempts."""
        import httpx

        body = {"model": self.model, "messages": build_messages(text, self.template, max_chars=self.max_chars),
                "temperature": self.temperature, "max_tokens": self.max_tokens}
        error = "not attempted"
        for attempt in range(self.max_attempts):
            if attempt:
                await asyncio.sleep(self._delay(attempt, error))
            run.requests += 1
            try:
                response = await client.post(self.url, json=body)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code in RETRY_STATUS or response.status_code >= 500:
                error = f"HTTP {response.status_code}" + _retry_after(response)
                continue
            if response.status_code != 200:
                return f"HTTP {response.status_code}: {response.text[:200]}"
            try:
                answer = response.json()["choices"][0]["message"]["content"] or ""
            except (ValueError, KeyError, IndexError, TypeError):
                error = f"malformed response: {response.text[:200]}"
                continue
            try:
                return PARSERS[self.template](answer), answer
            except ParseError as exc:
                error = f"unparseable answer ({exc}): {answer[:200]}"
        return error

    def _delay(self, attempt: int, error: str) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins when it asks for longer."""
        delay = random.uniform(0, min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
        if " retry-after=" in error:
            delay = max(delay, min(self.max_backoff, float(error.rsplit("=", 1)[1])))
        return delay


def first_per_id(ids: list[str]) -> list[int]:
    """Row numbers of each id's first row (a document annotated twice, by two interrupted runs, counts once)."""
    seen: dict[str, int] = {}
    for row, doc_id in enumerate(ids):
        seen.setdefault(doc_id, row)
    return sorted(seen.values())


def _retry_after(response) -> str:
    value = response.headers.get("retry-after")
    try:
        return f" retry-after={float(value)}" if value is not None else ""
    except ValueError:
        return ""
