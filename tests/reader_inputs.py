"""Real input files for the reader tests, built from Debian documentation on this machine.

Python's own docs (python3.11-doc: reST sources and the HTML pages built from them) and fortunes give
real text and real HTML; warcio writes the WARC and WET files the way a crawler would.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

PYTHON_DOCS = Path("/usr/share/doc/python3.11/html")
FORTUNES = Path("/usr/share/games/fortunes/fortunes")
BASE_URL = "https://docs.python.org/3.11/"


def doc_texts(n: int) -> list[tuple[str, str]]:
    """(name, text) of `n` reST sources of the Python docs between 1 and 30 kB, in name order."""
    sources = sorted((PYTHON_DOCS / "_sources").rglob("*.rst.txt"))
    picked = [p for p in sources if 1_000 <= p.stat().st_size <= 30_000][:n]
    assert len(picked) == n, f"python3.11-doc has only {len(picked)} usable sources"
    return [(str(p.relative_to(PYTHON_DOCS / "_sources")), p.read_text(encoding="utf-8")) for p in picked]


def fortunes(n: int) -> list[str]:
    entries = [e.strip() for e in FORTUNES.read_text(encoding="utf-8", errors="replace").split("\n%\n")]
    return [e for e in entries if len(e) > 40][:n]


def html_pages(n: int) -> list[tuple[str, bytes]]:
    """(url, html) of `n` library pages of the Python docs between 8 and 40 kB, in name order."""
    pages = sorted((PYTHON_DOCS / "library").glob("*.html"))
    picked = [p for p in pages if 8_000 <= p.stat().st_size <= 40_000][:n]
    assert len(picked) == n
    return [(BASE_URL + "library/" + p.name, p.read_bytes()) for p in picked]


def jsonl_records(n: int) -> list[dict]:
    return [{"id": f"py-{i}", "text": text, "url": BASE_URL + name.removesuffix(".rst.txt") + ".html",
             "domain": "docs.python.org", "lang": "en"} for i, (name, text) in enumerate(doc_texts(n))]


def write_lines(path: Path, lines: list[bytes]) -> list[int]:
    """Write lines (compressed by the path's extension); return each line's offset in the plain stream."""
    offsets, position = [], 0
    for line in lines:
        offsets.append(position)
        position += len(line)
    data = b"".join(lines)
    if path.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    elif path.name.endswith(".zst"):
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return offsets


def write_jsonl(path: Path, records: list[dict]) -> list[int]:
    return write_lines(path, [json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records])


def write_warc(path: Path, pages: list[tuple[str, bytes]], *, extras: bool = False) -> None:
    """One response record per page (with the X- and language headers Common Crawl-style corpora carry).
    With `extras`: also a warcinfo record, a request record per page, a PNG response and a response
    typed as plain text by the crawler, none of which is a document."""
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=path.name.endswith(".gz"))
        if extras:
            writer.write_record(writer.create_warcinfo_record(path.name, {"software": "mixforge tests"}))
        for url, html in pages:
            if extras:
                request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "docs.python.org")], is_http_request=True)
                writer.write_record(writer.create_warc_record(url, "request", http_headers=request))
            writer.write_record(_response(writer, url, html, "text/html; charset=utf-8",
                                          {"X-Origin": "python3.11-doc", "WARC-Identified-Content-Language": "eng"}))
        if extras:
            png = PYTHON_DOCS / "_images" / "logging_flow.png"
            writer.write_record(_response(writer, BASE_URL + "_images/logging_flow.png", png.read_bytes(),
                                          "image/png", {}))
            writer.write_record(_response(writer, BASE_URL + "robots.txt", b"User-agent: *\nDisallow:\n",
                                          "text/plain", {"WARC-Identified-Payload-Type": "text/plain"}))


def _response(writer: WARCWriter, url: str, payload: bytes, content_type: str, headers: dict):
    http = StatusAndHeaders("200 OK", [("Content-Type", content_type)], protocol="HTTP/1.1")
    return writer.create_warc_record(url, "response", payload=io.BytesIO(payload), http_headers=http,
                                     warc_headers_dict=headers)


def write_wet(path: Path, texts: list[tuple[str, str]]) -> None:
    """A WET file: a warcinfo record, then one conversion record (plain text) per (url, text)."""
    with path.open("wb") as out:
        writer = WARCWriter(out, gzip=path.name.endswith(".gz"))
        writer.write_record(writer.create_warcinfo_record(path.name, {"software": "mixforge tests"}))
        for url, text in texts:
            writer.write_record(writer.create_warc_record(
                url, "conversion", payload=io.BytesIO(text.encode()), warc_content_type="text/plain",
                warc_headers_dict={"WARC-Identified-Content-Language": "eng"}))
