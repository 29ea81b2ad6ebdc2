"""Ultra-FineWeb verification against its reference, training a proxy from scratch per candidate.

On a run of five sources of the sample corpus (Python docs, PostgreSQL docs, the Debian handbook, Debian
reference, fortunes), with held-out Python docs as the target and the four other sources as the base data
(so every candidate is judged as data added to a base that lacks the target's kind):
1. Verification (mixtures/verify.py): a base proxy trained once with a constant learning rate on B tokens,
   then per candidate an anneal of T tokens (30% candidate, learning rate decaying to zero) and the base-only
   anneal; score = base-only loss - candidate loss.
2. Reference: per candidate, a proxy trained from scratch (cosine schedule) on B + T tokens of the same
   30/70 blend, so it ends as trained as an annealed base; its target loss ranks the candidates.
Printed: seconds per verification anneal and per from-scratch proxy (and their ratio), the totals for all
candidates (the base counted once), and Spearman's rho between the two rankings. Everything runs here, one
thread per model, sequentially; timings on a shared machine are noisy.

    .venv/bin/python benchmarks/verify.py --quick    # B 60k, T 20k tokens, one seed, tiny proxies
    .venv/bin/python benchmarks/verify.py            # B 200k, T 40k tokens, two seeds, ~1M-parameter proxies
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "docs"
# source -> (file, documents, characters kept per document)
SOURCES = {"python-doc": ("python-doc.jsonl.gz", 150, 4000), "postgresql-doc": ("postgresql-doc.parquet", 200, 2500),
           "debian-handbook": ("debian-handbook.parquet", 150, 3000),
           "debian-reference": ("debian-reference.jsonl.zst", 100, 3000), "fortunes": ("fortunes.jsonl.gz", 1500, 4000)}
TARGET = "python-doc"


def build_run(folder: Path) -> Path:
    """A run directory with the five sources as one shard (`source` = sample/<name>)."""
    import duckdb
    import pyarrow as pa

    from storage.schema import DOCUMENT_SCHEMA, document_id
    from storage.shards import write_table_atomic

    con = duckdb.connect()
    parts = []
    for name, (file, limit, chars) in SOURCES.items():
        parts.append(con.sql(f"SELECT left(text, {chars}) AS text, url, '{name}' AS origin FROM "
                             f"'{SAMPLE / file}' WHERE lang = 'en' ORDER BY url LIMIT {limit}").to_arrow_table())
    docs = pa.concat_tables(parts)
    source = [f"sample/{o}" for o in docs.column("origin").to_pylist()]
    table = pa.table({"id": [document_id(s, i) for i, s in enumerate(source)],
                      "text": docs.column("text").cast(pa.large_string()), "url": docs.column("url"),
                      "source": source, "offset": pa.array(range(docs.num_rows), pa.int64()),
                      "metadata": [json.dumps({"origin": o}) for o in docs.column("origin").to_pylist()]},
                     schema=DOCUMENT_SCHEMA)
    write_table_atomic(table, folder / "run" / "shards" / "ingest" / "part-00000-0000.parquet")
    return folder / "run"


def config(run: Path, out: Path, quick: bool):
    from mixtures.verify import VerifyConfig

    proxy = {"d_model": 64, "n_layers": 2, "n_heads": 2, "seq_len": 64} if quick else {}
    return VerifyConfig.model_validate({
        "run_dir": str(run), "out": str(out), "holdout_fraction": 0.15,
        "base": {"sql": f"SELECT * FROM docs WHERE source <> 'sample/{TARGET}'", "proxy": proxy,
                 "train_tokens": 60_000 if quick else 200_000, "vocab_size": 2048 if quick else 4096},
        "candidates": [{"name": name, "source": f"sample/{name}"} for name in SOURCES],
        "targets": [{"name": TARGET, "sql": f"SELECT * FROM docs WHERE source = 'sample/{TARGET}'"}],
        "anneal": {"budget_tokens": 20_000 if quick else 40_000, "eval_tokens": 4096 if quick else 16_384,
                   "seeds": [0] if quick else [0, 1]}})


def from_scratch(settings, name: str, seed: int) -> tuple[float, float]:
    """Target loss and seconds of a proxy trained from scratch on B + T tokens of the candidate's blend."""
    from mixtures.proxy import train_proxy
    from mixtures.verify import BASE, _encoder, base_proxy_config, split_query, target_paths, write_query_shard

    total = settings.base.train_tokens + settings.anneal.budget_tokens
    share = round(settings.anneal.fraction * total)
    folder = settings.folder / "scratch" / f"{name}-{seed}"
    run, hold = settings.run_dir, settings.holdout_fraction
    write_query_shard(folder / "blend", _encoder(settings.base.tokenizer),
                      [(name, run, split_query(settings.candidate(name).select(), hold, False, seed), share),
                       (BASE, run, split_query(settings.base.sql, hold, False, seed), total - share)],
                      max_epochs=settings.anneal.max_epochs)
    proxy = base_proxy_config(settings, schedule="cosine", train_tokens=total, seed=seed)
    started = time.perf_counter()
    result = train_proxy(name, folder / "blend", target_paths(settings), settings.folder / "base" / "vocab.npy", proxy)
    return result.losses[TARGET], time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small budgets, one seed (make bench)")
    args = parser.parse_args()
    from scipy.stats import spearmanr

    from mixtures.verify import BASE, anneal_candidate, prepare_targets, results_table, summary_table, train_base

    with tempfile.TemporaryDirectory(prefix="mixforge-bench-verify-") as folder:
        settings = config(build_run(Path(folder)), Path(folder) / "verify", args.quick)
        prepare_targets(settings)
        as_json = settings.model_dump_json(exclude_unset=True)
        started = time.perf_counter()
        train_base(as_json)
        base_s = time.perf_counter() - started
        records, anneal_s = [], []
        for seed in settings.anneal.seeds:
            for name in [BASE, *SOURCES]:
                started = time.perf_counter()
                records.append(anneal_candidate(as_json, name, seed))
                anneal_s.append(time.perf_counter() - started)
        summary = summary_table(results_table(records)).set_index("candidate")
        scratch, scratch_s = {}, []
        for name in SOURCES:
            losses = []
            for seed in settings.anneal.seeds:
                loss, seconds = from_scratch(settings, name, seed)
                losses.append(loss)
                scratch_s.append(seconds)
            scratch[name] = sum(losses) / len(losses)
    b, t, n = settings.base.train_tokens, settings.anneal.budget_tokens, len(SOURCES)
    print(f"{n} candidates, target held-out {TARGET}; base {b:,} tokens, anneal {t:,} tokens "
          f"({settings.anneal.fraction:.0%} candidate), from scratch {b + t:,} tokens; "
          f"{len(settings.anneal.seeds)} seed(s)\n")
    print(f"{'candidate':<18} {'verify score':>12} {'verdict':>8} {'scratch loss':>13}")
    for name in summary.index:
        print(f"{name:<18} {summary.loc[name, 'score']:>+12.4f} {summary.loc[name, 'verdict']:>8} "
              f"{scratch[name]:>13.4f}")
    per_anneal, per_scratch = sum(anneal_s) / len(anneal_s), sum(scratch_s) / len(scratch_s)
    runs = n * len(settings.anneal.seeds)
    verify_total = base_s + sum(anneal_s)
    rho = spearmanr([summary.loc[c, "score"] for c in SOURCES], [-scratch[c] for c in SOURCES]).statistic
    print(f"\none verification anneal {per_anneal:.2f} s vs one from-scratch proxy {per_scratch:.2f} s: "
          f"x{per_scratch / per_anneal:.1f} cheaper")
    print(f"all {runs} candidate runs: verification {verify_total:.1f} s (base {base_s:.1f} s once + "
          f"{len(anneal_s)} anneals, base-only ones included) vs from scratch {sum(scratch_s):.1f} s: "
          f"x{sum(scratch_s) / verify_total:.1f}")
    print(f"rank agreement with from-scratch training: Spearman {rho:+.2f} over {n} candidates")


if __name__ == "__main__":
    main()
