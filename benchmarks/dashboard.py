"""Dashboard: how long pages take on a bigger run, against the plain ways of getting the same numbers.

The run: the dashboard tests' demo run (fortunes, scored and clustered) with its final stage repeated
until it holds N documents. Measured in one process, the same run for both sides:

  SQL console   `dashboards.run.run_sql` (read-only checks, worker thread, timeout) against a bare DuckDB
                query over the same Parquet files, and against the same with union_by_name (as the
                catalog's `docs` view reads them): the console's own overhead.
  Scores data   the Scores page's numbers (range, histogram, threshold preview, quartiles per
                super-cluster) as the page computes them, in DuckDB over the shards, against pandas and
                numpy on the columns read with pyarrow (what a dashboard that loads the data would do);
                the counts must agree.
  Scores page   the whole page rendered by Streamlit's AppTest, and the Runs page, for scale.

    python benchmarks/dashboard.py            # quick (default): 300k documents, < 1 min on 2 idle cores
    python benchmarks/dashboard.py --full     # 3M documents
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The repository root instead of benchmarks/: a script there named like a stdlib module (tokenize.py)
# would shadow it.
sys.path[0] = str(REPO)

import logging  # noqa: E402

# Pages run outside a server here (AppTest, or the data functions called directly): Streamlit warns
# about that on every call.
for _name in ("streamlit.runtime.scriptrunner_utils.script_run_context", "streamlit.runtime.caching.cache_data_api"):
    logging.getLogger(_name).addFilter(lambda record: record.levelno > logging.WARNING)

import duckdb  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.compute as pc  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from dashboards.scores import BINS, QUARTILES, by_group, histogram, score_range, threshold_counts  # noqa: E402
from storage.manifest import load_manifest, save_manifest  # noqa: E402
from storage.shards import ShardWriter  # noqa: E402
from tests.conftest import REGMIX_DATA  # noqa: E402
from tests.test_dashboard_pages import build_demo_run, page_app  # noqa: E402

GROUP_QUERY = "SELECT domain, count(*) AS n, sum(n_tokens) AS tokens FROM {table} GROUP BY 1 ORDER BY 1"
THRESHOLD = 0.75


def scaled_run(work: Path, n_docs: int) -> Path:
    """The demo run with a stage `scaled` of `n_docs` documents (the final stage repeated), made final."""
    run = build_demo_run(work / "run", REGMIX_DATA)
    final = pq.read_table(run / "shards" / "cluster")
    writer = ShardWriter(run, "scaled", 0)
    for start in range(0, n_docs, final.num_rows):
        copy = final.slice(0, min(final.num_rows, n_docs - start))
        ids = pc.binary_join_element_wise(copy.column("id"), pa.scalar(f"-{start}"), "")
        writer.write(kept=copy.set_column(copy.schema.get_field_index("id"), "id", ids))
    writer.close()
    manifest = load_manifest(run)
    manifest.final_stage = "scaled"
    save_manifest(manifest, run)
    return run


def best_of(repeats: int, action) -> tuple[float, object]:
    """Fastest of `repeats` timings of `action()` (the first warms caches), and its last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return min(times), result


def pandas_scores(files: list[Path]) -> dict:
    """The Scores page's numbers the plain way: load the columns, then numpy and pandas."""
    frame = pq.read_table(files, columns=["preselect", "n_tokens", "super_cluster"]).to_pandas()
    score = frame["preselect"].astype(float)
    low, high = score.min(), score.max()
    counts, _ = np.histogram(score, bins=BINS, range=(low, high))
    kept = score >= THRESHOLD
    groups = frame.groupby("super_cluster")["preselect"].quantile(list(QUARTILES))
    return {"range": (low, high), "histogram": counts, "kept_docs": int(kept.sum()),
            "kept_tokens": int(frame.loc[kept, "n_tokens"].sum()), "groups": groups}


def duckdb_scores(run: Path) -> dict:
    """The same numbers as the Scores page computes them (DuckDB over the shards, nothing loaded)."""
    low, high = score_range(run, "preselect")
    counts = threshold_counts(run, "preselect", THRESHOLD, keep_above=True)
    return {"range": (low, high), "histogram": histogram(run, "preselect", low, high)["docs"].to_numpy(),
            "kept_docs": counts["kept_docs"], "kept_tokens": counts["kept_tokens"],
            "groups": by_group(run, "preselect", "super_cluster")}


def render_scores(run: Path):
    app = page_app("scores", run)
    app.slider(key="scores_threshold_preselect").set_value(THRESHOLD).run()
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="3M documents instead of 300k")
    parser.add_argument("--quick", action="store_true", help="the default small run (what `make bench` runs)")
    args = parser.parse_args()
    n_docs = 3_000_000 if args.full else 300_000
    from dashboards.run import run_sql

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run = scaled_run(Path(tmp), n_docs)
        files = sorted((run / "shards" / "scaled").glob("*.parquet"))
        size = sum(f.stat().st_size for f in files)
        print(f"run: {n_docs:,} documents, {len(files)} shard(s), {size / 2**20:,.0f} MiB "
              f"(built in {time.perf_counter() - start:.1f} s)\n")

        bare = duckdb.connect()
        glob = f"{run / 'shards' / 'scaled'}/*.parquet"
        plain_sql = GROUP_QUERY.format(table=f"read_parquet('{glob}')")
        union_sql = GROUP_QUERY.format(table=f"read_parquet('{glob}', union_by_name=true)")  # the `docs` view
        raw_s, raw = best_of(5, lambda: bare.sql(plain_sql).to_arrow_table())
        view_s, _ = best_of(5, lambda: bare.sql(union_sql).to_arrow_table())
        ours_s, ours = best_of(5, lambda: run_sql(run, GROUP_QUERY.format(table="docs")))
        assert ours.equals(raw), "the console and bare DuckDB disagree"
        print(f"SQL console   {ours_s * 1000:8.1f} ms   bare DuckDB {raw_s * 1000:8.1f} ms   x{ours_s / raw_s:.2f}; "
              f"with the view's union_by_name {view_s * 1000:.1f} ms: own overhead x{ours_s / view_s:.2f}")

        ours_s, ours = best_of(3, lambda: duckdb_scores(run))
        plain_s, plain = best_of(3, lambda: pandas_scores(files))
        assert (ours["kept_docs"], ours["kept_tokens"]) == (plain["kept_docs"], plain["kept_tokens"])
        assert ours["histogram"].sum() == plain["histogram"].sum() == n_docs
        print(f"Scores data   {ours_s:8.2f} s    pandas      {plain_s:8.2f} s    "
              f"x{plain_s / ours_s:.2f} (range, histogram, threshold preview, quartiles by super-cluster)")
        page_s, app = best_of(3, lambda: render_scores(run))
        assert app.metric[0].value.startswith(f"{plain['kept_docs']:,} of "), app.metric[0].value
        print(f"Scores page   {page_s:8.2f} s    (rendered by AppTest: the numbers, plotly figures, Streamlit)")

        runs_s, _ = best_of(3, lambda: page_app("runs", run))
        print(f"Runs page     {runs_s:8.2f} s    ({n_docs / runs_s:,.0f} documents/s summarised)")


if __name__ == "__main__":
    main()
