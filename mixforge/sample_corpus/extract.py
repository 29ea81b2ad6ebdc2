"""HTML and manuals to labelled documents: page text, the extractors run in worker processes."""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import lxml.etree
import lxml.html

from mixforge.sample_corpus.sources import (
    HANDBOOK_ROOT,
    MAX_LINK_DENSITY,
    MIN_DOC_CHARS,
    ORIGINS,
    PYTHON_DOC_ROOT,
    UNTRANSLATED_OVERLAP,
)

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


def doc_row(text: str, url: str, origin: str, lang: str, lang_source: str) -> Doc:
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
    return ([doc_row(text, url, origin, "en", "package")] if _keep(text, skipped) else []), skipped


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
    docs = [doc_row(rendered, url, "debian-handbook", task.lang, "path")] if _keep(rendered, skipped) else []
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
            docs.append(doc_row(rendered, url, "debian-reference", task.lang, "package"))
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
