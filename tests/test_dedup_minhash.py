"""MinHash near-dedup: datatrove's signatures, planted duplicates in real documents found as well as datatrove's
own pipeline finds them, one document kept per cluster, resume, and the in-batch operator."""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dedup_inputs import (
    PlantedCorpus,
    cluster_pairs,
    datatrove_minhash,
    plant,
    python_doc_sections,
    write_jsonl,
    write_shards,
)

from flows.engine import fan_out
from operators.dup_clusters import DedupResult, mark_shards
from operators.minhash_dedup import REASON, MinHashConfig, MinHashDedup, MinHasher, _match_bucket, minhash_dedup
from storage.shards import RunMismatch

N_SHARDS = 4


@dataclass
class PlantedRun:
    corpus: PlantedCorpus
    ids: list[str]
    shards: list[str]
    work: Path
    out: Path
    result: DedupResult
    mark_stats: list[dict]
    datatrove: dict


@pytest.fixture(scope="module")
def planted_run(ray_local, tmp_path_factory) -> PlantedRun:
    """The planted corpus deduplicated by ours (on Ray) and by datatrove (in a subprocess, at the same time)."""
    root = tmp_path_factory.mktemp("minhash")
    corpus = plant(python_doc_sections())
    shards, ids = write_shards(corpus, root / "shards", N_SHARDS)
    write_jsonl(corpus.texts, ids, root / "jsonl")
    with ThreadPoolExecutor(1) as pool:
        theirs = pool.submit(datatrove_minhash, root / "jsonl", root / "datatrove")
        result = minhash_dedup(shards, root / "work", tasks=fan_out)  # through the engine's Ray fan-out
        mark_stats = mark_shards(shards, result, root / "out", "dedup", tasks=fan_out)
        datatrove = theirs.result()
    return PlantedRun(corpus, ids, shards, root / "work", root / "out", result, mark_stats, datatrove)


def our_clusters(run: PlantedRun) -> dict[int, str]:
    """Corpus index -> dup_cluster, from the per-shard cluster tables."""
    index = {doc_id: i for i, doc_id in enumerate(run.ids)}
    table = pa.concat_tables([pq.read_table(path) for path in run.result.cluster_files])
    return {index[doc_id]: cluster for doc_id, cluster in zip(table["id"].to_pylist(), table["dup_cluster"].to_pylist(),
                                                               strict=True)}


def scores(found: set[tuple[int, int]], corpus: PlantedCorpus) -> dict[str, float]:
    truth = corpus.true_pairs()
    result = {"pairs": len(found), "precision": len(found & truth) / max(1, len(found)),
              "recall": len(found & truth) / len(truth)}
    result.update({f"recall_{kind}": len(found & pairs) / len(pairs) for kind, pairs in corpus.truth.items()})
    return result


def test_signatures_equal_datatrove():
    """Same normalisation, word tokenizer, shingles and permutations: the same numbers as datatrove's."""
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    texts = python_doc_sections()[::24] + [
        "I cannot believe it isnt 10km, said the café's naïve owner: 3,14159 × 2 — ½ of ⅓!",
        "Ｆｕｌｌ－ｗｉｄｔｈ text with İstanbul and ΣΊΣΥΦΟΣ, dont gonna wanna, 1st 2nd 0.5kg 100MB",
        "four words only here",
        "",
    ]
    signature, has = MinHasher().signatures(pa.array(texts, pa.large_string()))
    reference = MinhashDedupSignature("/nonexistent")
    for i, text in enumerate(texts):
        shingles = reference.get_shingles(text)
        assert has[i] == (shingles.size > 0), text[:80]
        if shingles.size:
            expected = np.array(reference.get_signature(shingles), dtype=np.uint64).ravel()
            assert np.array_equal(signature[i], expected), text[:80]
    assert has.sum() == len(texts) - 2


def test_signatures_equal_datatrove_on_the_multilingual_sample_corpus(sample_corpus):
    """24 languages and scripts (Debian handbook, references, fortunes, web pages) through the same checks."""
    import pandas as pd
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    texts = []
    for path in sorted((sample_corpus / "docs").iterdir()):
        frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_json(path, lines=True)
        texts.extend(frame["text"].dropna().sample(min(len(frame), 20), random_state=0).tolist())
    signature, has = MinHasher().signatures(pa.array(texts, pa.large_string()))
    reference = MinhashDedupSignature("/nonexistent")
    for i, text in enumerate(texts):
        shingles = reference.get_shingles(text)
        assert has[i] == (shingles.size > 0), text[:80]
        if shingles.size:
            assert np.array_equal(signature[i], np.array(reference.get_signature(shingles), np.uint64).ravel())


def test_minhash_finds_planted_duplicates_as_well_as_datatrove(planted_run):
    corpus = planted_run.corpus
    ours = scores(cluster_pairs(our_clusters(planted_run)), corpus)
    theirs = scores(cluster_pairs(planted_run.datatrove["clusters"]), corpus)
    print(f"\n{len(corpus.texts)} docs, planted pairs: { {k: len(v) for k, v in corpus.truth.items()} }")
    for name, result in (("ours", ours), ("datatrove", theirs)):
        print(f"{name:>10}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                          for k, v in result.items()))
    for key in ("precision", "recall", *(f"recall_{kind}" for kind in corpus.truth)):
        assert ours[key] >= theirs[key] - 0.02, key
    # With s the Jaccard of a copy, P(found) = 1-(1-s^8)^14: a 1-2% word edit (s ~ 0.82-0.9) or two swapped
    # paragraphs give >= 0.95 per pair, exact copies 1; shuffles are a much larger change and only compared.
    assert ours["precision"] >= 0.95
    assert ours["recall_edit"] >= 0.9
    assert ours["recall_reorder"] >= 0.9
    assert ours["recall_exact"] == 1.0
    # Shared boilerplate (about 80 words on documents of 200+) makes no pair.
    boilerplate = {i for i, kind in enumerate(corpus.kinds) if kind == "boilerplate"}
    assert not {p for p in cluster_pairs(our_clusters(planted_run)) if set(p) <= boilerplate}


def test_marked_shards_keep_the_smallest_id_of_each_cluster(planted_run):
    kept = pa.concat_tables([pq.read_table(p) for p in sorted((planted_run.out / "shards" / "dedup").glob("*"))])
    dropped = pa.concat_tables([pq.read_table(p) for p in sorted((planted_run.out / "dropped" / "dedup").glob("*"))])
    assert kept.num_rows + dropped.num_rows == len(planted_run.corpus.texts)
    assert set(dropped["drop_reason"].to_pylist()) == {REASON}
    assert dropped.num_rows == planted_run.result.stats["duplicates"] == sum(
        s["minhash_dedup"]["dropped"][REASON] for s in planted_run.mark_stats)
    clusters = our_clusters(planted_run)
    members: dict[str, list[str]] = {}
    for i, cluster in clusters.items():
        members.setdefault(cluster, []).append(planted_run.ids[i])
    assert all(cluster == min(ids) for cluster, ids in members.items())
    kept_clustered = kept.filter(pc.is_valid(kept["dup_cluster"]))
    assert sorted(kept_clustered["id"].to_pylist()) == sorted(members)
    assert pc.all(pc.equal(kept_clustered["id"], kept_clustered["dup_cluster"])).as_py()
    assert pc.all(pc.not_equal(dropped["id"], dropped["dup_cluster"])).as_py()
    assert set(kept["id"].to_pylist()) | set(dropped["id"].to_pylist()) == set(planted_run.ids)


def test_rerun_skips_completed_units_and_refuses_other_inputs(planted_run, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(planted_run.work, work)
    clusters = work / "minhash" / "clusters" / "shard-00000.parquet"
    before = clusters.stat().st_mtime_ns
    again = minhash_dedup(planted_run.shards, work)
    assert again.stats == planted_run.result.stats
    assert clusters.stat().st_mtime_ns == before
    # Other inputs: refused, naming them; with restart the stale units are discarded, not mixed in.
    with pytest.raises(RunMismatch, match="other inputs"):
        minhash_dedup(planted_run.shards[:2], work)
    fewer = minhash_dedup(planted_run.shards[:2], work, restart=True)
    assert fewer.stats["docs"] == sum(pq.ParquetFile(p).metadata.num_rows for p in planted_run.shards[:2])
    assert len(fewer.cluster_files) == 2
    assert not (work / "minhash" / "bands" / "bucket-00" / "shard-00003.parquet").exists()


def test_band_range_splits_find_the_same_edges(planted_run, tmp_path):
    """Stage 2 split into band-key ranges (for buckets too big for one task) finds exactly the same pairs."""
    root = tmp_path / "minhash"
    shutil.copytree(planted_run.work / "minhash" / "bands", root / "bands")
    for bucket in range(MinHashConfig().num_buckets):
        whole = pq.read_table(planted_run.work / "minhash" / "edges" / f"bucket-{bucket:02d}-000.parquet")
        for split in range(3):
            _match_bucket(bucket, split, 3, str(root))
        parts = pa.concat_tables([pq.read_table(root / "edges" / f"bucket-{bucket:02d}-{s:03d}.parquet")
                                  for s in range(3)])
        assert sorted(zip(parts["a"].to_pylist(), parts["b"].to_pylist(), strict=True)) == \
            sorted(zip(whole["a"].to_pylist(), whole["b"].to_pylist(), strict=True))


def test_in_batch_operator_matches_the_distributed_dedup(planted_run):
    batch = pa.concat_tables([pq.read_table(path) for path in planted_run.shards])
    operator = MinHashDedup()
    out = operator(batch)
    clusters = out.filter(pc.is_valid(out["dup_cluster"]))
    index = {doc_id: i for i, doc_id in enumerate(planted_run.ids)}
    found = {index[i]: c for i, c in zip(clusters["id"].to_pylist(), clusters["dup_cluster"].to_pylist(), strict=True)}
    assert found == our_clusters(planted_run)
    assert operator.stats.dropped[REASON] == planted_run.result.stats["duplicates"]
    assert operator.stats.docs_out == batch.num_rows - planted_run.result.stats["duplicates"]
