"""Corpus readers: one input file (local path or fsspec URL) -> Arrow batches in the document schema.

The base class does what every format shares, once: opening through fsspec, gzip/zstd by extension,
the size limit, quarantine rows for unreadable input, stable ids, batching into Arrow and the
accounting. A format module writes two methods: `split` cuts the input into raw records with their
offsets, and `parse` turns one raw record into text, url and metadata.

Accounting: every record seen is a good document, a dropped one (a row with `drop_reason`) or one
quarantine row, so `stats.docs_in == stats.docs_out + sum(stats.dropped.values()) + stats.quarantined`.
A whole-file failure (cannot open, wrong Parquet schema, corrupt or cut stream) is one quarantine row
and counts as one record seen. Records that are not documents at all (a WARC's request or warcinfo
records, non-HTML responses) are not seen: they are counted in `stats.skipped` by reason.

Failures are classified: content errors (corrupt gzip, bad JSON, invalid UTF-8, wrong schema) are the
input's and are quarantined; transient ones (timeouts, throttling, connection resets, expired or denied
credentials: `is_transient`) are the environment's. A transient error is retried with backoff, reopening
the input and skipping the records already read, and if it persists it raises TransientInputError, so
the unit fails and is not marked done: a rerun retries it and nothing is quarantined for it.

Ids: an input's own id (`id_key` of the JSONL and Parquet readers, default "id") is the document id, as
in datatrove; without one the id is `document_id` of the canonical source URI and the offset. An input id
seen before in the same input is counted in `stats.duplicate_ids` and replaced by the generated id, the
input's kept in `metadata` under the id key; repeats across inputs and parts are made unique the same
way once the read stage is done (storage.unique_ids).
"""

from __future__ import annotations

import errno
import inspect
import io
import itertools
import re
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, BinaryIO, NamedTuple

import fsspec
import orjson
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from operators.base import StageStats
from storage.schema import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA, STAGE_COLUMNS, document_id, source_uri

# What a reader emits: the document columns plus `drop_reason` (null = a good document).
READ_SCHEMA = DOCUMENT_SCHEMA.append(pa.field("drop_reason", STAGE_COLUMNS["drop_reason"]))

SNIPPET_CHARS = 200


class ReadBatch(NamedTuple):
    documents: pa.Table  # READ_SCHEMA
    quarantine: pa.Table  # QUARANTINE_SCHEMA


class Raw(NamedTuple):
    """One record as cut from the input, before parsing."""

    offset: int  # byte offset of the record (or row index where the format has no byte offsets)
    n_bytes: int  # its size in the input, checked against max_doc_bytes before parsing
    data: Any  # what `parse` needs (never parsed when the record is over the size limit)
    head: bytes | str  # the record's first bytes, for quarantine snippets


class Parsed(NamedTuple):
    text: str
    url: str | None = None
    metadata: str | None = None  # the input's other fields, as a JSON object
    drop_reason: str | None = None
    id: str | None = None  # the input's own id (None: generated from source and offset)
    id_key: str = "id"  # where a duplicate input id is kept in metadata


class RecordError(ValueError):
    """A record that cannot be read; the rest of the input still is."""


class InputNotFound(FileNotFoundError):
    """An input path or glob that matches nothing: the user's mistake, reported before anything is read."""


class UnknownFormat(ValueError):
    """An input named explicitly whose extension no reader takes."""


class TransientInputError(Exception):
    """The input could not be read for a reason of the environment (network, throttling, credentials)
    even after retries: the unit fails, so that a rerun retries it."""


class InputError(Exception):
    """The input cannot be read on from `offset` (corrupt or cut stream, wrong schema): stop the file."""

    def __init__(self, offset: int | None, message: str) -> None:
        super().__init__(message)
        self.offset = offset


class Reader:
    """Reads one input file (local path or fsspec URL) into document batches."""

    name = "reader"
    # Whether the base decompresses by extension; WARC files are not, as warcio reads gzip members
    # itself and their offsets are offsets in the compressed file (as in Common Crawl's index).
    decompress = True
    # What a unit's part (operators.reader.plan_units) counts: "bytes" of the stored file (the base reads
    # that window as if it were the file, offsets then shifted to the file's), or the format's own
    # ("row_groups": the format's split reads only `self.part`).
    part_kind = "bytes"

    def __init__(self, batch_size: int = 2000, max_doc_bytes: int = 8 * 2**20,
                 batch_chars: int = 64 * 2**20, retries: int = 3, retry_delay: float = 0.5) -> None:
        """Format readers take these as keywords next to their own options. A transient error is retried
        `retries` times, after retry_delay, 2 x retry_delay... seconds."""
        self.batch_size = batch_size
        self.max_doc_bytes = max_doc_bytes
        self.batch_chars = batch_chars  # bounds a batch's memory when documents are large
        self.retries = retries
        self.retry_delay = retry_delay
        self.stats = StageStats()
        self.part: tuple[int, int] | None = None

    def split(self, stream: BinaryIO) -> Iterator[Raw]:
        """The input's records in order; raises InputError where the input stops being readable."""
        raise NotImplementedError

    def parse(self, raw: Raw) -> Parsed:
        """One record's text, url and metadata. Raises RecordError (or anything else) for a bad record: it
        is quarantined and reading goes on. (Records that are no documents are left out by `split`.)"""
        raise NotImplementedError

    def __call__(self, path: str) -> Iterator[ReadBatch]:
        """Read `path`: an input, or a part of one (a unit of plan_units)."""
        path, self.part = split_unit(path)
        start = time.perf_counter()
        for batch in self._read(path):
            self.stats.seconds += time.perf_counter() - start
            yield batch
            start = time.perf_counter()
        self.stats.seconds += time.perf_counter() - start

    def _read(self, path: str) -> Iterator[ReadBatch]:
        fs, fs_path, source = resolve(path)
        batch = _BatchBuilder(source, self.stats)
        progress = _Progress(self.stats)
        for attempt in range(self.retries + 1):
            try:
                yield from self._attempt(fs, fs_path, source, batch, progress)
                break
            except _Transient as transient:
                if attempt == self.retries:
                    raise TransientInputError(f"{source}: {_describe(transient.error)} (still failing after "
                                              f"{self.retries} retries; rerun to retry)") from transient.error
                progress.rewind()
                time.sleep(self.retry_delay * 2**attempt)
        if batch.rows:
            yield batch.flush()

    def _attempt(self, fs: fsspec.AbstractFileSystem, fs_path: str, source: str, batch: _BatchBuilder,
                 progress: _Progress) -> Iterator[ReadBatch]:
        """Read the input from its start, skipping the records an earlier attempt already took."""
        with ExitStack() as stack:
            try:
                stream = stack.enter_context(fs.open(fs_path, "rb"))
                if self.part is not None and self.part_kind == "bytes":
                    stream = io.BufferedReader(_Window(stream, *self.part), buffer_size=2**20)
                if self.decompress:
                    stream = stack.enter_context(_decompressed(stream, fs_path))
            except Exception as error:  # a failure to open is reported (or retried), not raised
                raise_if_transient(error)
                batch.fail(None, f"cannot open {source}: {_describe(error)}")
                yield batch.flush()
                return
            records = self.split(stream)
            seen = 0
            while True:
                try:
                    raw = next(records)
                except StopIteration:
                    break
                except _Transient:
                    raise
                except InputError as error:
                    batch.fail(None if error.offset is None else error.offset + self._base, str(error))
                    break
                except Exception as error:  # an unforeseen stream failure ends the file only
                    raise_if_transient(error)
                    batch.fail(None, f"unreadable input: {_describe(error)}")
                    break
                seen += 1
                if seen <= progress.records:
                    continue  # taken by an earlier attempt
                self._add(batch, raw)
                progress.took()
                if batch.full(self.batch_size, self.batch_chars):
                    yield batch.flush()

    @property
    def _base(self) -> int:
        """Where the stream the format reads starts in the file (a byte part's start, else 0)."""
        return self.part[0] if self.part is not None and self.part_kind == "bytes" else 0

    def _add(self, batch: _BatchBuilder, raw: Raw) -> None:
        raw = raw._replace(offset=raw.offset + self._base)
        if raw.n_bytes > self.max_doc_bytes:
            batch.fail(raw.offset, f"document of {raw.n_bytes} bytes exceeds max_doc_bytes={self.max_doc_bytes}",
                       raw.head)
            return
        try:
            parsed = self.parse(raw)
        except RecordError as error:
            batch.fail(raw.offset, str(error), raw.head)
            return
        except Exception as error:  # one bad record must not end the file
            batch.fail(raw.offset, _describe(error), raw.head)
            return
        if parsed.drop_reason is None and (not parsed.text or parsed.text.isspace()):
            parsed = parsed._replace(drop_reason="empty_text")
        batch.add(raw.offset, parsed)


class _Transient(Exception):
    """Carries a transient error out of a format's `split` to the retry loop."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _Progress:
    """How many records the attempts so far took: a retry skips those. A format's `split` counts its skipped
    records as it cuts, so a retry, which cuts again from the start, restores the counts from before."""

    def __init__(self, stats: StageStats) -> None:
        self.stats = stats
        self.records = 0
        self.skipped = stats.skipped.copy()

    def took(self) -> None:
        self.records += 1

    def rewind(self) -> None:
        self.stats.skipped = self.skipped.copy()


# What makes an error transient: builtin types, and by class name the network errors of libraries that may
# not be imported (botocore, aiohttp, urllib3, fsspec), error codes of S3 and HTTP statuses.
_TRANSIENT_TYPES = (TimeoutError, ConnectionError, PermissionError)
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError",
                    "ResponseStreamingError", "IncompleteReadError", "IncompleteRead", "ProtocolError",
                    "ClientConnectionError", "ClientPayloadError", "ServerDisconnectedError", "ServerTimeoutError",
                    "FSTimeoutError", "NoCredentialsError", "CredentialRetrievalError"}
_TRANSIENT_CODES = {"Throttling", "ThrottlingException", "SlowDown", "RequestTimeout", "RequestTimeoutException",
                    "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired", "RequestExpired",
                    "AccessDenied", "InvalidAccessKeyId", "InternalError", "ServiceUnavailable", "503", "500"}
_TRANSIENT_ERRNOS = {errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE,
                     errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EAGAIN, errno.EACCES}
_TRANSIENT_STATUSES = {401, 403, 408, 429, 500, 502, 503, 504}


def is_transient(error: BaseException) -> bool:
    """Whether an error is the environment's (retry, and fail the unit if it persists) rather than the
    input's (quarantine): checked along the chain of causes, as s3fs re-raises boto's errors as OSErrors."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, _TRANSIENT_TYPES) or isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            return True
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(error).__mro__):
            return True
        response = getattr(error, "response", None)  # botocore's ClientError
        if isinstance(response, dict) and (response.get("Error", {}).get("Code") in _TRANSIENT_CODES or
                                           response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                                           in _TRANSIENT_STATUSES):
            return True
        if getattr(error, "status", None) in _TRANSIENT_STATUSES:  # aiohttp's, for http(s):// inputs
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def raise_if_transient(error: BaseException) -> None:
    """For a format's catch-all around reading: a transient error goes to the retry loop, not to quarantine."""
    if isinstance(error, _Transient):
        raise error
    if is_transient(error):
        raise _Transient(error) from error


def resolve(path: str) -> tuple[fsspec.AbstractFileSystem, str, str]:
    """(filesystem, path within it, source): source is the absolute path for local files, else the URL."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    source = fs_path if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(fs_path)
    return fs, fs_path, source


def _decompressed(stream: BinaryIO, path: str) -> BinaryIO:
    path = path.lower()
    if path.endswith(".gz"):
        from isal import igzip  # ISA-L inflate: the same gzip, 2-3x faster than zlib

        return igzip.IGzipFile(fileobj=stream, mode="rb")
    if path.endswith((".zst", ".zstd")):
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_across_frames=True)
        return io.BufferedReader(reader, buffer_size=2**20)
    # fsspec's remote files (s3fs, gcsfs...) take no limit in readline(): give them an io one that does
    return io.BufferedReader(stream, buffer_size=2**20)


def decode_text(data: bytes) -> str:
    """UTF-8, else the charset cchardet detects (datatrove's WarcReader does the same)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        import cchardet

        charset = cchardet.detect(data)["encoding"]
        if not charset or charset.lower().replace("-", "") == "utf8":
            raise RecordError(f"invalid UTF-8 at byte {error.start} and no other charset detected") from None
        try:
            return data.decode(charset)
        except (UnicodeDecodeError, LookupError):
            raise RecordError(f"invalid UTF-8 at byte {error.start}, and not {charset} either") from None


def input_id(fields: dict, id_key: str | None) -> str | None:
    """The input's own id (popped from `fields`), as a string; None where it has none."""
    if not id_key:
        return None
    value = fields.pop(id_key, None)
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def snippet(head: bytes | str | None) -> str | None:
    if head is None:
        return None
    if isinstance(head, bytes):
        head = head[: 4 * SNIPPET_CHARS].decode("utf-8", errors="replace")
    return head[:SNIPPET_CHARS]


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


class _BatchBuilder:
    """Columns of one batch being filled, for documents and quarantine rows of one source; counts each row
    into the reader's stats as it comes (str lengths are free here, an Arrow pass later is not)."""

    def __init__(self, source: str, stats: StageStats) -> None:
        self.source = source
        self.uri = source_uri(source)
        self.stats = stats
        self.input_ids: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []
        self.texts: list[str] = []
        self.urls: list[str | None] = []
        self.offsets: list[int] = []
        self.metadata: list[str | None] = []
        self.drop_reasons: list[str | None] = []
        self.failures: list[dict] = []
        self.chars = 0

    @property
    def rows(self) -> int:
        return len(self.ids) + len(self.failures)

    def full(self, batch_size: int, batch_chars: int) -> bool:
        return self.rows >= batch_size or self.chars >= batch_chars

    def add(self, offset: int, parsed: Parsed) -> None:
        doc_id, metadata = parsed.id, parsed.metadata
        if doc_id is None:
            doc_id = document_id(self.uri, offset)
        elif doc_id in self.input_ids:  # made unique; the input's id is kept where it was
            self.stats.duplicate_ids += 1
            metadata = orjson.dumps({parsed.id_key: doc_id, **orjson.loads(metadata or "{}")}).decode()
            doc_id = document_id(self.uri, offset)
        else:
            self.input_ids.add(doc_id)
        self.ids.append(doc_id)
        self.texts.append(parsed.text)
        self.urls.append(parsed.url)
        self.offsets.append(offset)
        self.metadata.append(metadata)
        self.drop_reasons.append(parsed.drop_reason)
        chars = len(parsed.text)
        self.chars += chars
        self.stats.docs_in += 1
        self.stats.chars_in += chars
        if parsed.drop_reason is None:
            self.stats.docs_out += 1
            self.stats.chars_out += chars
        else:
            self.stats.dropped[parsed.drop_reason] += 1

    def fail(self, offset: int | None, error: str, head: bytes | str | None = None) -> None:
        self.failures.append({"source": self.source, "offset": offset, "error": error, "snippet": snippet(head)})
        self.stats.docs_in += 1
        self.stats.quarantined += 1

    def flush(self) -> ReadBatch:
        documents = pa.Table.from_arrays(
            [
                pa.array(self.ids, pa.string()),
                pa.array(self.texts, pa.large_string()),
                pa.array(self.urls, pa.string()),
                pa.array([self.source] * len(self.ids), pa.string()),
                pa.array(self.offsets, pa.int64()),
                pa.array(self.metadata, pa.string()),
                pa.array(self.drop_reasons, pa.string()),
            ],
            schema=READ_SCHEMA,
        )
        quarantine = pa.Table.from_pylist(self.failures, schema=QUARANTINE_SCHEMA)
        self._reset()
        return ReadBatch(documents, quarantine)


# Extensions each reader takes, with the compression suffixes the base decompresses.
_COMPRESSED = ("", ".gz", ".zst", ".zstd")
READER_EXTENSIONS: dict[str, tuple[str, ...]] = {
    "read_jsonl": tuple(ext + c for ext in (".jsonl", ".json", ".ndjson") for c in _COMPRESSED),
    "read_parquet": (".parquet",),
    "read_wet": (".wet", ".wet.gz"),  # before WARC, so .warc.wet.gz is read as WET
    "read_warc": (".warc", ".warc.gz", ".arc", ".arc.gz"),
}


def _reader_classes() -> dict[str, type[Reader]]:
    # imported here: the format modules import this one
    from operators.read_jsonl import JsonlReader
    from operators.read_parquet import ParquetReader
    from operators.read_warc import WarcReader, WetReader

    return {cls.name: cls for cls in (JsonlReader, ParquetReader, WetReader, WarcReader)}


def reader_name(path: str) -> str | None:
    """The reader for `path` by its extension, or None if no reader takes it."""
    lowered = path.lower()
    for name, extensions in READER_EXTENSIONS.items():
        if lowered.endswith(extensions):
            return name
    return None


def reader_for(path: str, **options: Any) -> Reader:
    """A reader for `path`, chosen by extension. Each reader gets the options its constructor takes, so
    one set of options (text_key=..., batch_size=...) serves mixed inputs; an option no reader takes is
    an error."""
    classes = _reader_classes()
    common = set(inspect.signature(Reader.__init__).parameters) - {"self"}
    accepted = {name: common | set(inspect.signature(cls.__init__).parameters) - {"self", "options"}
                for name, cls in classes.items()}
    unknown = set(options) - set().union(*accepted.values())
    if unknown:
        raise TypeError(f"unknown reader option(s): {', '.join(sorted(unknown))}")
    name = reader_name(path)
    if name is None:
        raise _unknown_extension(path)
    return classes[name](**{k: v for k, v in options.items() if k in accepted[name]})


def _known_extensions() -> str:
    return ", ".join(ext for exts in READER_EXTENSIONS.values() for ext in exts)


def _unknown_extension(path: str) -> UnknownFormat:
    return UnknownFormat(f"no reader for {path!r}: known extensions are {_known_extensions()} "
                         "(rename or convert the file)")


def expand_inputs(inputs: list[str]) -> list[str]:
    """Input files from paths, directories (recursive), globs and fsspec URLs (s3://, gs://, memory://,
    file://, globs included). Directories and globs contribute the files a reader takes, leaving out
    hidden ones (a name or folder starting with "." or "_": temp files, _SUCCESS, _progress) and plain
    .json files (manifests and configs far more often than JSONL; name one to read it). Local files come
    back as absolute paths, others as full URLs; sorted and deduplicated. An input that matches nothing,
    or a file named explicitly that no reader takes, is an error before anything is read."""
    found: set[str] = set()
    for item in inputs:
        fs, fs_path, _ = resolve(item)
        if any(char in fs_path for char in "*?["):  # a glob
            matches = [p for m in fs.glob(fs_path) for p in _walk(fs, m)]
        elif fs.isdir(fs_path):
            matches = _walk(fs, fs_path)
        elif fs.exists(fs_path):
            if reader_name(fs_path) is None:
                raise _unknown_extension(item)
            matches = [fs_path]
        else:
            raise InputNotFound(f"input not found: {item} (check the path; directories, globs and s3:// URLs "
                                "work too)")
        if not matches:
            raise InputNotFound(f"no input files with a known extension match {item!r} "
                                f"(known: {_known_extensions()})")
        found.update(p if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(p) for p in matches)
    return sorted(found)


def _walk(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    """The input files at or under `path`."""
    root = path.rstrip("/")
    if fs.isdir(root):
        files = fs.find(root)
    else:
        files, root = [root], root.rsplit("/", 1)[0]
    return [f for f in files if reader_name(f) and not f.endswith(".json")
            and not any(part.startswith((".", "_")) for part in f[len(root):].split("/") if part)]


# Units smaller than files. A unit is an input path, or `<path>#part=<start>-<stop>`: bytes [start, stop)
# of the stored file for JSONL (cut at line starts) and WARC/WET (cut where a record starts), row groups
# [start, stop) for Parquet. Compressed JSONL and whole-file gzip archives cannot be entered mid-stream
# and stay whole units.
_PART = re.compile(r"^(?P<path>.+)#part=(?P<start>\d+)-(?P<stop>\d+)$")
_SCAN_BYTES = 2**20
_WARC_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_HEADS = (b"WARC/1.0\r\n", b"WARC/1.1\r\n")


def split_unit(unit: str) -> tuple[str, tuple[int, int] | None]:
    """(input path, part or None) of a unit."""
    match = _PART.match(unit)
    if match is None:
        return unit, None
    return match["path"], (int(match["start"]), int(match["stop"]))


def plan_units(files: list[str], unit_bytes: int) -> list[str]:
    """The units of work for `files`: each file, or its parts of about `unit_bytes` where it is larger and
    its format can be entered mid-file. The plan depends only on the files and `unit_bytes`, so a rerun
    plans the same units. A part's documents keep the file's offsets and generated ids; what a format
    remembers across a file (an input id seen twice, trafilatura's memory of boilerplate paragraphs in
    WARC pages) starts afresh with each part, as it does with each file."""
    units: list[str] = []
    for path in files:
        fs, fs_path, _ = resolve(path)
        try:
            cuts = _cuts(fs, fs_path, reader_name(fs_path), unit_bytes)
        except Exception as error:  # unreadable: one unit, whose reader reports it (a plan that
            if is_transient(error):  # depended on the network's mood would not be the same on a rerun)
                raise TransientInputError(f"{path}: cannot plan its units: {_describe(error)}; rerun to retry") \
                    from error
            cuts = []
        units.extend([path] if len(cuts) < 3 else [f"{path}#part={a}-{b}" for a, b in itertools.pairwise(cuts)])
    return units


def _cuts(fs: fsspec.AbstractFileSystem, path: str, name: str | None, unit_bytes: int) -> list[int]:
    """Part boundaries (first and last included), or [] when the file stays one unit."""
    if name not in ("read_parquet", "read_jsonl", "read_warc", "read_wet"):
        return []
    size = fs.size(path)
    if size <= unit_bytes:
        return []
    if name == "read_parquet":  # runs of row groups of about unit_bytes stored
        import pyarrow.parquet as pq

        with fs.open(path, "rb") as handle:
            metadata = pq.ParquetFile(handle).metadata
        cuts, stored = [0], 0
        for group in range(metadata.num_row_groups):
            if stored >= unit_bytes:
                cuts.append(group)
                stored = 0
            row_group = metadata.row_group(group)
            stored += sum(row_group.column(i).total_compressed_size for i in range(row_group.num_columns))
        return [*cuts, metadata.num_row_groups]
    lowered = path.lower()
    if name == "read_jsonl" and lowered.endswith((".jsonl", ".json", ".ndjson")):
        find = _next_line
    elif name in ("read_warc", "read_wet") and lowered.endswith((".warc", ".wet")):
        find = _next_warc_record
    elif name in ("read_warc", "read_wet") and lowered.endswith((".warc.gz", ".wet.gz")):
        find = _next_warc_member
    else:
        return []
    cuts = [0]
    with fs.open(path, "rb") as handle:
        for target in range(unit_bytes, size, unit_bytes):
            if target <= cuts[-1]:
                continue
            cut = find(handle, target, size)
            if cut is None:
                break
            if cut > cuts[-1]:
                cuts.append(cut)
    return [*cuts, size] if cuts[-1] < size else cuts


def _next_line(handle: BinaryIO, target: int, size: int) -> int | None:
    """The start of the first line that starts at or after `target`."""
    handle.seek(target - 1)
    if handle.read(1) == b"\n":
        return target
    while chunk := handle.readline(_SCAN_BYTES):
        if chunk.endswith(b"\n"):
            position = handle.tell()
            return position if position < size else None
    return None


def _scan(handle: BinaryIO, target: int, size: int, marker: bytes, accept) -> int | None:
    """The first position >= target where `marker` occurs and accept(position) holds."""
    position = target
    while position < size:
        handle.seek(position)
        block = handle.read(_SCAN_BYTES + len(marker))
        start = 0
        while (found := block.find(marker, start)) >= 0:
            if accept(position + found):
                return position + found
            start = found + 1
        position += _SCAN_BYTES
    return None


def _next_warc_record(handle: BinaryIO, target: int, size: int) -> int | None:
    """The start of the first record of an uncompressed WARC at or after `target`: a WARC/1.x line right
    after the blank lines that end the record before it, whose header block parses."""
    def accept(position: int) -> bool:
        handle.seek(position - 4)
        head = handle.read(4 + 16)
        if head[:4] != b"\r\n\r\n" or not head[4:].startswith(_WARC_HEADS):
            return False
        return _warc_record_at(handle, position)

    return _scan(handle, max(target, 4), size, b"WARC/1.", accept)


def _next_warc_member(handle: BinaryIO, target: int, size: int) -> int | None:
    """The start of the first gzip member at or after `target` that decompresses to a WARC record (a file
    gzipped record by record, as Common Crawl's are; a file gzipped whole has none past its start)."""
    import zlib

    def accept(position: int) -> bool:
        handle.seek(position)
        try:
            head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(handle.read(4096), 64)
        except zlib.error:
            return False
        return head.startswith(_WARC_HEADS) and _warc_record_at(handle, position)

    return _scan(handle, target, size, _WARC_GZIP_MAGIC, accept)


def _warc_record_at(handle: BinaryIO, position: int) -> bool:
    """Whether warcio reads a complete record header at `position`."""
    from warcio.archiveiterator import ArchiveIterator

    handle.seek(position)
    try:
        record = next(iter(ArchiveIterator(handle, arc2warc=True)), None)
    except Exception:
        return False
    return record is not None and record.length is not None


class _Window(io.RawIOBase):
    """Bytes [start, stop) of a seekable stream, read as if they were the whole file."""

    def __init__(self, stream: BinaryIO, start: int, stop: int) -> None:
        super().__init__()
        self.stream, self.start, self.stop = stream, start, stop
        self.position = 0
        stream.seek(start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.stop - self.start}[whence]
        self.position = max(0, base + offset)
        self.stream.seek(self.start + self.position)
        return self.position

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self.stop - self.start - self.position))
        if n == 0:
            return 0
        data = self.stream.read(n)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)
