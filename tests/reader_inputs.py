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


# What write_crawl puts in a WARC besides its HTML pages, by the reason each record is skipped.
CRAWL_SKIPPED = {"warcinfo": 1, "revisit": 1, "metadata": 1, "resource": 1, "not_html": 2, "not_200": 1}
EMPTY_PAGE = b"<html><head><title></title></head><body><div></div></body></html>"


def write_crawl(path: Path, pages: list[tuple[str, bytes]], *, whole_gzip: bool = False) -> None:
    """A WARC as crawlers write them: warcinfo, a request and a response per page, then a revisit, a
    metadata and a resource record, a PNG (typed by libmagic only), a text/plain response (typed by the
    crawler), a 404 page and a page with nothing to extract. `whole_gzip`: the file is gzipped as one
    member instead of record by record (wget/wpull with some settings)."""
    plain = io.BytesIO()
    writer = WARCWriter(plain, gzip=path.name.endswith(".gz") and not whole_gzip)
    writer.write_record(writer.create_warcinfo_record(path.name, {"software": "wpull 2.0.1"}))
    for url, html in pages:
        request = StatusAndHeaders("GET / HTTP/1.1", [("Host", "docs.python.org")], is_http_request=True)
        writer.write_record(writer.create_warc_record(url, "request", http_headers=request))
        writer.write_record(_response(writer, url, html, "text/html; charset=utf-8", {}))
    url = pages[0][0]
    http = StatusAndHeaders("200 OK", [("Content-Type", "text/html")], protocol="HTTP/1.1")
    writer.write_record(writer.create_revisit_record(url, "sha1:AAAA", url, "2024-01-01T00:00:00Z",
                                                     http_headers=http))
    writer.write_record(writer.create_warc_record(url, "metadata", payload=io.BytesIO(b"outlink: " + url.encode()),
                                                  warc_content_type="application/warc-fields"))
    writer.write_record(writer.create_warc_record(BASE_URL + "crawl.log", "resource",
                                                  payload=io.BytesIO(b"2024-01-01 200 " + url.encode()),
                                                  warc_content_type="text/plain"))
    png = PYTHON_DOCS / "_images" / "logging_flow.png"
    writer.write_record(_response(writer, BASE_URL + "_images/logging_flow.png", png.read_bytes(), "image/png", {}))
    writer.write_record(_response(writer, BASE_URL + "robots.txt", b"User-agent: *\n", "text/plain",
                                  {"WARC-Identified-Payload-Type": "text/plain"}))
    missing = StatusAndHeaders("404 Not Found", [("Content-Type", "text/html")], protocol="HTTP/1.1")
    writer.write_record(writer.create_warc_record(BASE_URL + "gone.html", "response", http_headers=missing,
                                                  payload=io.BytesIO(b"<html><body><h1>Not Found</h1></body></html>")))
    writer.write_record(_response(writer, BASE_URL + "empty.html", EMPTY_PAGE, "text/html", {}))
    data = plain.getvalue()
    path.write_bytes(gzip.compress(data, mtime=0) if whole_gzip else data)


def write_arc(path: Path, pages: list[tuple[str, bytes]]) -> None:
    """An ARC (version 1) file, as the Internet Archive's crawlers wrote them before WARC: a filedesc header,
    then one record per page (HTTP response included) and a PNG; gzipped record by record for .arc.gz."""
    version = b"1 0 mixforge\nURL IP-address Archive-date Content-type Archive-length\n"
    records = [b"filedesc://%s 0.0.0.0 20240101000000 text/plain %d\n%s" % (path.name.encode(), len(version),
                                                                             version)]
    png = PYTHON_DOCS / "_images" / "logging_flow.png"
    entries = [(url, "text/html", html) for url, html in pages] + \
        [(BASE_URL + "_images/logging_flow.png", "image/png", png.read_bytes())]
    for url, content_type, body in entries:
        http = b"HTTP/1.1 200 OK\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n" % (content_type.encode(),
                                                                                     len(body)) + body
        records.append(b"%s 127.0.0.1 20240101000000 %s %d\n%s" % (url.encode(), content_type.encode(), len(http),
                                                                 http))
    records = [r + b"\n" for r in records]
    if path.name.endswith(".gz"):
        records = [gzip.compress(r, mtime=0) for r in records]
    path.write_bytes(b"".join(records))
