"""The language-ID and heuristic filter operators around their decisions: columns and types, rows
dropped earlier, drop accounting, C4's cleaned text, null and empty texts, and the same results when
Ray Data runs them as actors."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from filter_inputs import datatrove_decisions, per_origin, sample_documents

from operators.base import OperatorChain
from operators.c4_quality import C4Quality
from operators.fineweb_quality import FineWebQuality
from operators.gopher_quality import GopherQuality
from operators.gopher_repetition import GopherRepetition
from operators.langid import LanguageID
from storage.schema import DOCUMENT_SCHEMA

FILTERS = {
    "gopher_quality": GopherQuality,
    "gopher_repetition": GopherRepetition,
    "fineweb_quality": FineWebQuality,
    "c4_quality": C4Quality,
}


@pytest.fixture(scope="module")
def docs(sample_corpus) -> pa.Table:
    """About 100 real documents of every origin, in the document schema."""
    table = per_origin(sample_documents(sample_corpus), 15, 150_000)
    return table.select(DOCUMENT_SCHEMA.names).cast(DOCUMENT_SCHEMA).combine_chunks()


def _with_texts(texts: list[str | None], text_type: pa.DataType = pa.large_string()) -> pa.Table:
    n = len(texts)
    return pa.table({"id": [f"doc{i}" for i in range(n)], "text": pa.array(texts, text_type), "url": [None] * n,
                     "source": ["test"] * n, "offset": list(range(n)), "metadata": [None] * n})


@pytest.mark.parametrize("make", [*FILTERS.values(), LanguageID])
def test_earlier_drops_keep_their_reason_and_every_row_is_counted(make, docs):
    earlier = pa.array(["earlier_step" if i % 7 == 0 else None for i in range(docs.num_rows)], pa.string())
    batch = docs.append_column("drop_reason", earlier)
    operator = make()
    out = operator(batch)
    assert out.num_rows == batch.num_rows and out.column("id").equals(batch.column("id"))
    reasons = out.column("drop_reason").to_pylist()
    assert all(reasons[i] == "earlier_step" for i in range(0, docs.num_rows, 7))
    stats = operator.stats
    assert stats.docs_in == batch.num_rows == stats.docs_out + sum(stats.dropped.values())
    assert stats.dropped["earlier_step"] == len(range(0, docs.num_rows, 7))
    assert 0 < stats.docs_out < batch.num_rows and stats.seconds > 0


def test_c4_rewrites_kept_texts_only(docs):
    out = C4Quality()(docs)
    kept = pc.is_null(out.column("drop_reason"))
    assert out.schema.field("text").type == pa.large_string()
    assert out.filter(pc.invert(kept)).column("text").equals(docs.filter(pc.invert(kept)).column("text"))
    reference = datatrove_decisions(docs.column("text").to_pylist())["c4_text"]
    assert out.filter(kept).column("text").to_pylist() == [t for t, k in zip(reference, kept.to_pylist(),
                                                                             strict=True) if k]


def test_null_empty_and_blank_texts_decide_as_datatrove_on_empty_text(docs):
    texts = [None, "", "   \n \t", "\n\n\n", docs.column("text")[0].as_py()]
    reference = datatrove_decisions(["" if text is None else text for text in texts])
    for name, make in FILTERS.items():
        assert make()(_with_texts(texts)).column("drop_reason").to_pylist() == reference[name], name
    assert make()(_with_texts([])).column("drop_reason").type == pa.string()


def test_string_and_large_string_texts_give_the_same_results(docs):
    texts = docs.column("text").to_pylist()[:60]
    for make in [*FILTERS.values(), LanguageID]:
        small, large = make()(_with_texts(texts, pa.string())), make()(_with_texts(texts, pa.large_string()))
        assert small.column("drop_reason").equals(large.column("drop_reason"))
        assert small.schema.field("text").type == pa.string() and small.column("text").to_pylist() == \
            large.column("text").to_pylist()


def test_ray_data_actors_give_the_chain_results(ray_local, docs):
    """Language ID and C4 as Ray Data callable classes (the model and word cache load once per actor),
    batch by batch, give what the in-process chain gives."""
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False
    steps = [(LanguageID, {"languages": ["en", "de", "fr", "es", "it"]}), (C4Quality, {})]
    dataset = ray_local.data.from_arrow(docs)
    for make, options in steps:
        dataset = dataset.map_batches(make, fn_constructor_kwargs=options, batch_format="pyarrow", batch_size=64,
                                      compute=ActorPoolStrategy(size=1), num_cpus=0.5)
    through_ray = pa.Table.from_pylist(dataset.take_all()).sort_by("id")

    kept, dropped = OperatorChain([make(**options) for make, options in steps])(docs)
    direct = pa.concat_tables([kept, dropped], promote_options="permissive").sort_by("id")
    assert through_ray.column("id").equals(direct.column("id"))
    assert through_ray.column("drop_reason").to_pylist() == direct.column("drop_reason").to_pylist()
    assert pc.all(pc.equal(through_ray.column("lang"), direct.column("lang"))).as_py()
    live = pc.is_null(direct.column("drop_reason"))
    assert through_ray.filter(live).column("text").to_pylist() == direct.filter(live).column("text").to_pylist()
    assert 0 < sum(live.to_pylist()) < docs.num_rows
