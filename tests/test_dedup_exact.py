"""Exact dedup: normalisation, the in-batch operator, and the distributed dedup across shards, checked against a
plain-Python reference on real documents."""

from __future__ import annotations

import random
import unicodedata

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dedup_inputs import PlantedCorpus, python_doc_sections, without_near_duplicates, write_shards

from operators.dup_clusters import mark_shards
from operators.exact_dedup import REASON, ExactDedup, exact_dedup, normalize_text
from operators.minhash_dedup import minhash_dedup


def reference_key(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def layout_variant(text: str, rng: random.Random) -> str:
    """The same text to a reader: other case, line breaks and spacing, compatibility characters."""
    words = text.split()
    spaced = "".join(w + rng.choice([" ", "  ", "\n", "\t", "\u00a0", "\u3000"]) for w in words)
    return "\n " + spaced.upper().replace("FI", "\ufb01") + " \n"


@pytest.fixture(scope="module")
def corpus() -> PlantedCorpus:
    """300 real sections, 40 layout variants and 30 verbatim copies of some, and 30 copies with one comma added
    (different text: not exact duplicates)."""
    rng = random.Random(7)
    base = without_near_duplicates(python_doc_sections())[:300]
    texts, kinds = list(base), ["base"] * len(base)
    truth: dict[str, set[tuple[int, int]]] = {"layout": set(), "verbatim": set(), "comma": set()}
    picked = rng.sample(range(len(base)), 100)
    for n, i in enumerate(picked):
        kind = "layout" if n < 40 else "verbatim" if n < 70 else "comma"
        text = layout_variant(base[i], rng) if kind == "layout" else base[i] if kind == "verbatim" else \
            base[i].replace(" ", ", ", 1)
        truth[kind].add((i, len(texts)))
        texts.append(text)
        kinds.append(kind)
    return PlantedCorpus(texts, kinds, truth)


def exact_pairs(corpus: PlantedCorpus) -> set[tuple[int, int]]:
    return corpus.truth["layout"] | corpus.truth["verbatim"]


def reference_groups(texts: list[str]) -> dict[int, int]:
    """Corpus index -> index of the group's first member, for texts in a group of 2+."""
    first: dict[str, int] = {}
    members: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        key = reference_key(text)
        first.setdefault(key, i)
        members.setdefault(key, []).append(i)
    return {i: first[key] for key, group in members.items() if len(group) > 1 for i in group}


def test_normalisation_matches_python_reference(corpus):
    tricky = ["  Tabs\tand\u2003em\u00a0spaces  ", "ﬁne Ｆｕｌｌｗｉｄｔｈ ①", "Straße ÉCOLE", "", "\u2028line\u2029"]
    texts = corpus.texts + tricky
    assert normalize_text(pa.array(texts)).to_pylist() == [reference_key(t) for t in texts]


def test_in_batch_operator_keeps_the_smallest_id(corpus):
    ids = [f"doc-{(i * 7919) % 1000:04d}" for i in range(len(corpus.texts))]
    batch = pa.table({"id": ids, "text": corpus.texts})
    operator = ExactDedup()
    out = operator(batch)
    groups = reference_groups(corpus.texts)
    expected_cluster = {}
    for i, first in groups.items():
        expected_cluster.setdefault(first, []).append(ids[i])
    expected = [min(expected_cluster[groups[i]]) if i in groups else None for i in range(len(ids))]
    assert out["dup_cluster"].to_pylist() == expected
    dropped = [i for i, reason in enumerate(out["drop_reason"].to_pylist()) if reason]
    assert {out["drop_reason"][i].as_py() for i in dropped} == {REASON}
    assert [i for i in range(len(ids)) if expected[i] not in (None, ids[i])] == dropped
    assert len(dropped) == len(exact_pairs(corpus)) == 70  # the comma copies are not exact duplicates
    assert operator.stats.dropped[REASON] == 70 and operator.stats.docs_out == len(ids) - 70
    # Rows dropped before are left alone and do not count as copies.
    first_copy = min(corpus.truth["verbatim"])[1]
    reason = pa.array(["earlier_filter" if i == first_copy else None for i in range(len(ids))], pa.string())
    again = ExactDedup()(batch.append_column("drop_reason", reason))
    assert again["drop_reason"][first_copy].as_py() == "earlier_filter"
    assert again["dup_cluster"][first_copy].as_py() is None


def test_distributed_exact_dedup_then_minhash_in_one_pass(corpus, ray_local, tmp_path):
    shards, ids = write_shards(corpus, tmp_path / "shards", 3)
    exact = exact_dedup(shards, tmp_path / "work", partitions=4)
    groups = reference_groups(corpus.texts)
    assert exact.stats["duplicates"] == len(groups) - len(set(groups.values())) == 70
    # MinHash on the survivors of exact dedup (same shards): only the comma copies are left to find.
    near = minhash_dedup(shards, tmp_path / "work", after=exact)
    assert near.stats["docs"] == len(corpus.texts) - 70 and near.stats["duplicates"] == 30

    stats = mark_shards(shards, [exact, near], tmp_path / "out", "dedup")
    assert sum(s["exact_dedup"]["dropped"].get(REASON, 0) for s in stats) == 70
    assert sum(s["minhash_dedup"]["dropped"].get("minhash_duplicate", 0) for s in stats) == 30
    final = pa.concat_tables([pq.read_table(p) for p in (tmp_path / "out" / "shards" / "dedup").glob("*")])
    dropped = pa.concat_tables([pq.read_table(p) for p in (tmp_path / "out" / "dropped" / "dedup").glob("*")])
    assert final.num_rows == len(corpus.texts) - 100 and dropped.num_rows == 100
    assert len({reference_key(t) for t in final["text"].to_pylist()}) == final.num_rows
    survivors = set(final["id"].to_pylist())
    assert all((ids[i] in survivors) != (ids[j] in survivors) for i, j in corpus.truth["comma"])
    # every document of an exact group points at the group's smallest id, or (if MinHash dropped that one)
    # the smallest id's row points on to the survivor
    everything = pa.concat_tables([final, dropped])
    cluster_of = dict(zip(everything["id"].to_pylist(), everything["dup_cluster"].to_pylist(), strict=True))
    for first in set(groups.values()):
        members = [ids[i] for i, g in groups.items() if g == first]
        kept = min(members)
        assert all(cluster_of[m] == kept for m in members if m != kept)
        assert cluster_of[kept] == kept or cluster_of[kept] in survivors
