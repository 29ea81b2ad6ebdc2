"""The build: extract every input, write the corpus, and MANIFEST.json last; reused while up to date."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from mixforge.sample_corpus.extract import Outcome, Task, run_task
from mixforge.sample_corpus.inputs import WebPage, debian_package_versions, doc_tasks, fortunes, web_pages
from mixforge.sample_corpus.sources import DEBIAN_PACKAGES, ORIGINS, SDISTS, TRUTH_SCHEMA, WEB_DOMAIN
from mixforge.sample_corpus.writers import DocSink, ParquetRows, WarcFiles, warc_date


def _python_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trafilatura", "lxml", "warcio", "pyarrow", "zstandard")}


def _fingerprint(debian: dict[str, str], limit: int | None) -> dict[str, Any]:
    return {
        # Any change to this package may change the output, so it invalidates earlier builds.
        "builder_sha256": hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py"))))
        .hexdigest(),
        "limit": limit,
        "debian": debian,
        "sdists": {name: version for name, version in SDISTS},
    }


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reusable(out_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    manifest_path = out_dir / "MANIFEST.json"
    if not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("fingerprint") != fingerprint:
        return None
    for rel, entry in manifest.get("files", {}).items():
        if not (out_dir / rel).exists() or (out_dir / rel).stat().st_size != entry["bytes"]:
            return None
    return manifest


@contextlib.contextmanager
def _extracted(tasks: list[Task], processes: int) -> Iterator[Iterator[tuple[Task, Outcome]]]:
    """Outcomes in task order; with `processes` > 1 a fork pool extracts ahead of the writer.

    Enter it before opening writers, so the workers are forked from a process without writer threads.
    """
    if processes <= 1 or len(tasks) < 2 * processes:
        yield map(run_task, tasks)
        return
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        yield pool.imap(run_task, tasks, chunksize=4)


def build_sample_corpus(
    out_dir: Path,
    cache_dir: Path,
    *,
    force: bool = False,
    limit: int | None = None,
    processes: int | None = None,
) -> dict[str, Any]:
    """Build (or reuse) the sample corpus in `out_dir`; returns its counts (see MANIFEST.json).

    `limit` caps the inputs per source and language (a quick build for tests); `processes` defaults
    to min(2, cpu count). The returned dict has `reused` True when an existing build matched.
    """
    out_dir, cache_dir = Path(out_dir), Path(cache_dir)
    started = time.perf_counter()
    debian = debian_package_versions(DEBIAN_PACKAGES)
    fingerprint = _fingerprint(debian, limit)
    if not force and (manifest := _reusable(out_dir, fingerprint)):
        return {**manifest["counts"], "reused": True}
    if (out_dir / "MANIFEST.json").exists():
        (out_dir / "MANIFEST.json").unlink()
    for sub in ("web", "docs"):
        shutil.rmtree(out_dir / sub, ignore_errors=True)
        (out_dir / sub).mkdir(parents=True)
    processes = processes or min(2, os.cpu_count() or 1)
    built = datetime.now(UTC)
    skipped: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)

    pages = web_pages(cache_dir, limit, skipped["web"])
    web_tasks = [Task("web", page.name, page.lang, (index, page.html)) for index, page in enumerate(pages)]
    tasks = web_tasks + doc_tasks(limit)

    with _extracted(tasks, processes) as outcomes:
        truth = ParquetRows(out_dir / "truth.parquet.tmp", TRUTH_SCHEMA)
        sinks = {n: DocSink(out_dir / o.file, truth, o.file) for n, o in ORIGINS.items() if o.domain != WEB_DOMAIN}
        # The warcinfo date is the newest page's, not the build's, so a rebuild writes the same bytes.
        warc = WarcFiles(
            out_dir / "web" / "sample.warc.gz",
            out_dir / "web" / "sample.warc.wet.gz",
            warc_date(max((page.mtime for page in pages), default=0)),
        )
        for task, (docs, task_skipped) in outcomes:
            if task.kind == "web":
                page = pages[task.extra[0]]
                warc.add(page, docs[0]["text"])
                truth.add(
                    {
                        "url": page.url,
                        "origin": page.origin,
                        "domain": WEB_DOMAIN,
                        "lang": page.lang,
                        "lang_source": page.lang_source,
                        "file": "web/sample.warc.gz",
                    }
                )
                continue
            skipped[task.kind].update(task_skipped)
            for doc in docs:
                sinks[doc["origin"]].write(doc)
    for doc in fortunes(limit, skipped["fortunes"]):
        sinks["fortunes"].write(doc)
    warc.close()
    for sink in sinks.values():
        sink.close()
    truth.close()
    os.replace(out_dir / "truth.parquet.tmp", out_dir / "truth.parquet")

    manifest = _manifest(out_dir, fingerprint, built, started, cache_dir, warc.pages, skipped, pages)
    (out_dir / "MANIFEST.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return {**manifest["counts"], "reused": False}


def _manifest(
    out_dir: Path,
    fingerprint: dict[str, Any],
    built: datetime,
    started: float,
    cache_dir: Path,
    warc_pages: int,
    skipped: dict[str, collections.Counter],
    pages: list[WebPage],
) -> dict[str, Any]:
    truth = pq.read_table(out_dir / "truth.parquet").to_pylist()
    by_origin = collections.Counter(row["origin"] for row in truth)
    by_lang = collections.Counter(row["lang"] for row in truth)
    by_origin_lang: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (origin, lang), n in sorted(collections.Counter((r["origin"], r["lang"]) for r in truth).items()):
        by_origin_lang[origin][lang] = n
    by_file = collections.Counter(row["file"] for row in truth)
    files = {}
    for rel in sorted({o.file for o in ORIGINS.values()} | {"web/sample.warc.wet.gz", "truth.parquet"}):
        path = out_dir / rel
        fmt = "warc.gz" if rel.endswith(".warc.gz") else "".join(Path(rel).suffixes).lstrip(".")
        files[rel] = {
            "format": fmt,
            "documents": by_file.get(rel, warc_pages if "web/" in rel else len(truth)),
            "bytes": path.stat().st_size,
            "sha256": _sha256(path),
        }
    by_format = collections.Counter()
    for rel, entry in files.items():
        if rel != "truth.parquet":
            by_format[entry["format"]] += entry["documents"]
    return {
        "description": "mixforge sample corpus (see mixforge/sample_corpus/)",
        "fingerprint": fingerprint,
        "built_at": built.isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "cache_dir": str(cache_dir.resolve()),
        "counts": {
            "total": len(truth),
            "web_pages": warc_pages,
            "by_origin": dict(sorted(by_origin.items())),
            "by_lang": dict(sorted(by_lang.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_origin_lang": dict(by_origin_lang),
            "by_format": dict(sorted(by_format.items())),
        },
        "skipped": {kind: dict(sorted(c.items())) for kind, c in sorted(skipped.items()) if c},
        "files": files,
        "packages": {
            "debian": fingerprint["debian"],
            "sdists": fingerprint["sdists"],
            "python": _python_versions(),
        },
        "truth": {
            "origin": "the package a document was read from",
            "domain": {name: o.domain for name, o in ORIGINS.items()},
            "lang": {name: o.lang_truth for name, o in ORIGINS.items()},
            "lang_codes": "ISO 639-1 primary subtags (pt-BR -> pt, zh-CN/zh-TW -> zh, nb-NO -> nb)",
            "url": {
                "docs": "the manual's public address for the same page (fortunes: file path#index)",
                "web": "the URL the sdist's tests map to the cache file (MOCK_PAGES), else "
                "https://sample.invalid/<package>/<file>",
            },
            "web_pages": {
                "url_source": dict(collections.Counter(p.url_source for p in pages)),
                "lang_source": dict(collections.Counter(p.lang_source for p in pages)),
            },
        },
    }
