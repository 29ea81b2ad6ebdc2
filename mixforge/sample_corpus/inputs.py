"""The inputs: installed Debian documentation, fortunes, and the web pages of fetched sdists."""

from __future__ import annotations

import ast
import collections
import hashlib
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import lxml.etree
import lxml.html

from mixforge.sample_corpus.extract import Doc, Task, doc_row
from mixforge.sample_corpus.sources import (
    DEBIAN_PACKAGES,
    DEBIAN_REFERENCE_ROOT,
    EXCLUDED_WEB_PAGES,
    FORTUNES_PER_LANG,
    FORTUNES_PER_OTHER_LANG,
    FORTUNES_ROOT,
    HANDBOOK_ROOT,
    MIN_FORTUNE_CHARS,
    POSTGRESQL_DOC_ROOT,
    PYTHON_DOC_ROOT,
    PYTHON_DOC_SKIP,
    REVIEWED_WEB_LANG,
    SDISTS,
    SampleCorpusError,
)


def debian_package_versions(packages: Iterable[str]) -> dict[str, str]:
    """Installed versions; raises SampleCorpusError naming every package that is missing."""
    versions, missing = {}, []
    for package in packages:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}\t${Version}", package], capture_output=True, text=True
        )
        status, _, version = result.stdout.partition("\t")
        if result.returncode != 0 or not status.endswith(" installed"):
            missing.append(package)
        else:
            versions[package] = version
    if missing:
        raise SampleCorpusError(
            "Debian packages missing: " + " ".join(missing) + ". Install them with "
            "infra/install-system-deps.sh (or `make sample`)."
        )
    return versions


def package_files(package: str, root: str) -> list[str]:
    """Regular files (not links) that `package` installs under `root`, sorted."""
    listing = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True, check=True).stdout
    return sorted(
        path
        for path in listing.splitlines()
        if path.startswith(root) and os.path.isfile(path) and not os.path.islink(path)
    )


def _limited(items: list, limit: int | None) -> list:
    return items if limit is None else items[:limit]


def doc_tasks(limit: int | None) -> list[Task]:
    """All HTML inputs, in a fixed order: at most `limit` files per source and language."""
    tasks = []
    python = [p for p in package_files("python3.11-doc", PYTHON_DOC_ROOT) if p.endswith(".html")]
    python = [p for p in python if not PYTHON_DOC_SKIP.match(Path(p).name) and "/_" not in p]
    tasks += [Task("python-doc", p, "en") for p in _limited(python, limit)]
    postgres = [p for p in package_files("postgresql-doc-15", POSTGRESQL_DOC_ROOT) if p.endswith(".html")]
    tasks += [Task("postgresql-doc", p, "en") for p in _limited(postgres, limit)]
    handbook = [p for p in package_files("debian-handbook", HANDBOOK_ROOT) if p.endswith(".html")]
    by_region: dict[str, list[str]] = collections.defaultdict(list)
    for path in handbook:
        region = Path(path).relative_to(HANDBOOK_ROOT).parts[0]
        if Path(path).parent.name == region:
            by_region[region].append(path)
    for region in sorted(by_region):
        lang = region.split("-")[0].lower()
        tasks += [Task("debian-handbook", p, lang) for p in _limited(by_region[region], limit)]
    for package, lang in DEBIAN_PACKAGES.items():
        if not package.startswith("debian-reference-"):
            continue
        chapters = [p for p in package_files(package, DEBIAN_REFERENCE_ROOT) if p.endswith(f".{lang}.html")]
        for path in _limited(chapters, limit):
            english = path.removesuffix(f".{lang}.html") + ".en.html"
            tasks.append(Task("debian-reference", path, lang, (english,)))
    return tasks


def fortunes(limit: int | None, skipped: collections.Counter) -> Iterator[Doc]:
    """Fortunes of >= MIN_FORTUNE_CHARS, a fixed pseudo-random (hash-ordered) choice per language."""
    candidates: dict[str, dict[str, tuple[str, int]]] = collections.defaultdict(dict)
    for package, lang in DEBIAN_PACKAGES.items():
        if not package.startswith("fortunes"):
            continue
        for path in package_files(package, FORTUNES_ROOT):
            if path.endswith((".dat", ".u8")) or "ascii" in Path(path).name:
                continue
            text = Path(path).read_text(encoding="utf-8", errors="replace")
            for index, fortune in enumerate(re.split(r"^%[ \t]*$", text, flags=re.M)):
                fortune = fortune.strip("\n").rstrip()
                if len(fortune.strip()) < MIN_FORTUNE_CHARS:
                    skipped["short"] += 1
                elif fortune in candidates[lang]:
                    skipped["duplicate"] += 1
                else:
                    candidates[lang][fortune] = (path, index)
    chosen = []
    for lang in sorted(candidates):
        cap = FORTUNES_PER_LANG.get(lang, FORTUNES_PER_OTHER_LANG)
        cap = cap if limit is None else min(cap, limit)
        by_hash = sorted(candidates[lang], key=lambda t: hashlib.sha1(t.encode()).hexdigest())
        skipped["not-sampled"] += max(0, len(by_hash) - cap)
        chosen += [(candidates[lang][t], t, lang) for t in by_hash[:cap]]
    for (path, index), text, lang in sorted(chosen):
        yield doc_row(text, f"file://{path}#{index}", "fortunes", lang, "package")


@dataclass
class WebPage:
    """A cached page from an sdist test suite, with where its URL and language come from."""

    origin: str
    name: str
    url: str
    url_source: str
    html: bytes
    mtime: int
    lang: str
    lang_source: str


def fetch_sdist(name: str, version: str, cache_dir: Path) -> Path:
    """The sdist tarball in `cache_dir/sdists`, downloaded (not built) when it is not there yet."""
    target = cache_dir / "sdists"
    wanted = f"{name}-{version}.tar.gz"
    for candidate in target.glob("*.tar.gz") if target.exists() else ():
        if candidate.name.lower().replace("_", "-") == wanted:
            return candidate
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:", "--no-deps"]
    command += ["--no-build-isolation", f"{name}=={version}", "-d", str(target)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SampleCorpusError(f"`{' '.join(command)}` failed:\n{result.stderr[-2000:]}")
    return fetch_sdist(name, version, cache_dir)


def mock_page_urls(tests: dict[str, str]) -> dict[str, str]:
    """File name -> URL from the `MOCK_PAGES = {url: file}` dicts of a test suite (first mapping wins)."""
    urls: dict[str, str] = {}
    for name in sorted(tests):
        for node in ast.walk(ast.parse(tests[name])):
            if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MOCK_PAGES" for t in node.targets):
                for url, file in ast.literal_eval(node.value).items():
                    if "." in (urlsplit(url).hostname or ""):
                        urls.setdefault(file, url)
    return urls


_DECLARED_LANG = (
    ("html-lang", "//html/@lang | //html/@xml:lang"),
    ("meta-content-language", "//meta[translate(@http-equiv,'CONTENTLAGU','contentlagu')='content-language']/@content"),
    ("og-locale", "//meta[@property='og:locale']/@content"),
)


def declared_lang(html: bytes, name: str) -> tuple[str, str]:
    """(lang, how known) for a web page: reviewed table, then what the page declares, then its file name."""
    if name in REVIEWED_WEB_LANG:
        return REVIEWED_WEB_LANG[name], "reviewed"
    try:
        page = lxml.html.fromstring(html)
    except (ValueError, lxml.etree.ParserError):
        page = None
    for source, xpath in _DECLARED_LANG if page is not None else ():
        values = [v.strip() for v in page.xpath(xpath) if v.strip()]
        if values:
            return re.split(r"[-_]", values[0])[0].lower(), source
    suffix = re.search(r"\.([a-z]{2})\.html?$", name)
    return (suffix.group(1), "file-name") if suffix else ("und", "unknown")


def web_pages(cache_dir: Path, limit: int | None, skipped: collections.Counter) -> list[WebPage]:
    """Pages of the sdists' tests/cache in a fixed order; a page with the bytes or URL of an earlier one is
    left out (the two suites share some pages, and one URL is cached twice from different fetches)."""
    pages, seen = [], set()
    for name, version in SDISTS:
        tests, cached = {}, {}
        # One sequential pass (random access into a .tar.gz re-decompresses from the start).
        with tarfile.open(fetch_sdist(name, version, cache_dir), mode="r|gz") as tar:
            for member in tar:
                if member.isfile() and re.fullmatch(r"[^/]+/tests/[^/]+\.py", member.name):
                    tests[member.name] = tar.extractfile(member).read().decode("utf-8", "replace")
                elif member.isfile() and re.fullmatch(r"[^/]+/tests/cache/[^/]+\.html?", member.name):
                    cached[member.name] = (tar.extractfile(member).read(), int(member.mtime))
        urls = mock_page_urls(tests)
        taken = 0
        for member_name, (html, mtime) in sorted(cached.items()):
            file = Path(member_name).name
            digest = hashlib.sha256(html).hexdigest()
            if file in EXCLUDED_WEB_PAGES:
                skipped["fixture"] += 1
                continue
            url = urls.get(file) or f"https://sample.invalid/{name}/{file}"
            if digest in seen or url in seen:
                skipped["duplicate"] += 1
                continue
            if limit is not None and taken >= limit:
                break
            seen |= {digest, url}
            taken += 1
            lang, lang_source = declared_lang(html, file)
            pages.append(
                WebPage(
                    origin=f"{name}-cache",
                    name=file,
                    url=url,
                    url_source="synthetic" if url.startswith("https://sample.invalid/") else "sdist test map",
                    html=html,
                    mtime=mtime,
                    lang=lang,
                    lang_source=lang_source,
                )
            )
    return pages
