"""Inputs on object storage: fsspec s3:// against moto's local S3-compatible server."""

from __future__ import annotations

import fsspec

from flows.ingest import ingest
from storage.catalog import open_catalog, query
from storage.manifest import load_manifest


def test_ingest_reads_s3_inputs_like_local_ones(s3_server, sample_corpus, ray_local, tmp_path):
    fs = fsspec.filesystem("s3")
    fs.mkdir("corpus")
    for name in ("python-doc.jsonl.gz", "debian-reference.jsonl.zst"):
        fs.put(str(sample_corpus / "docs" / name), f"corpus/raw/{name}")
    local = tmp_path / "local"
    remote = tmp_path / "remote"
    ingest(inputs=[str(sample_corpus / "docs" / "python-doc.jsonl.gz"),
                   str(sample_corpus / "docs" / "debian-reference.jsonl.zst")], out=str(local), progress=False)
    ingest(inputs=["s3://corpus/raw/*.jsonl.*"], out=str(remote), progress=False)

    def texts(run):
        return query(open_catalog(run), "SELECT url, md5(text) AS digest FROM docs ORDER BY url, digest").to_pylist()

    assert texts(remote) == texts(local) and len(texts(local)) == 445 + 434
    manifest = load_manifest(remote)
    assert [f.path for f in manifest.inputs] == ["s3://corpus/raw/debian-reference.jsonl.zst",
                                                 "s3://corpus/raw/python-doc.jsonl.gz"]
    assert [f.sha256 for f in manifest.inputs] == [f.sha256 for f in sorted(load_manifest(local).inputs,
                                                                            key=lambda f: f.path)]
