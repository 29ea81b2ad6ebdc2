"""What the sample corpus is made of: origins, Debian packages, sdists, the reviewed language table."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

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
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").exists():
        return repo / "data" / "cache"
    return Path.home() / ".cache" / "mixforge"
