"""Document ids unique across a whole stage, not only within one input part.

A reader makes a repeated input id unique within the part it reads (operators/reader.py); two files, or
two parts of one file, can still bring the same id. After the read stage, one DuckDB pass over the id
column of its shards finds the repeats; every occurrence after the first (in unit order, then row order)
gets the generated id of its source and offset, as a repeat within a part does, with the input's id kept
in `metadata` under the id key. Only files holding a repeat are rewritten, atomically, so running it again
finds nothing to do (the stage's resume is unaffected).
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from storage.schema import document_id, source_uri
from storage.shards import write_table_atomic


def make_ids_unique(files: list[Path], id_key: str = "id") -> int:
    """Replace every repeat of an id in `files` (a stage's kept and dropped shards); return how many."""
    if not files:
        return 0
    import duckdb

    repeats = duckdb.connect().execute(
        """SELECT filename, file_row_number FROM (
               SELECT filename, file_row_number,
                      row_number() OVER (PARTITION BY id ORDER BY parse_filename(filename), filename,
                                         file_row_number) AS occurrence
               FROM read_parquet(?, filename = true, file_row_number = true))
           WHERE occurrence > 1""", [[str(f) for f in files]]).fetchall()
    rows_by_file: dict[str, set[int]] = {}
    for filename, row in repeats:
        rows_by_file.setdefault(filename, set()).add(row)
    for filename, rows in rows_by_file.items():
        _rewrite(Path(filename), rows, id_key)
    return len(repeats)


def _rewrite(path: Path, rows: set[int], id_key: str) -> None:
    table = pq.read_table(path)
    ids, metadata = table.column("id").to_pylist(), table.column("metadata").to_pylist()
    sources, offsets = table.column("source").to_pylist(), table.column("offset").to_pylist()
    for row in rows:
        metadata[row] = orjson.dumps({id_key: ids[row], **orjson.loads(metadata[row] or "{}")}).decode()
        ids[row] = document_id(source_uri(sources[row]), offsets[row])
    schema = table.schema
    table = table.set_column(schema.get_field_index("id"), schema.field("id"), pa.array(ids, pa.string()))
    table = table.set_column(schema.get_field_index("metadata"), schema.field("metadata"),
                             pa.array(metadata, pa.string()))
    write_table_atomic(table, path)
