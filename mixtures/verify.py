"""Ultra-FineWeb's cheap data verification: anneal one trained base on candidate data instead of training a
model per candidate, and let the verdicts choose the quality classifier's seeds.

Protocol (Wang et al. 2025, "Ultra-FineWeb", arXiv 2505.05427, its efficient verification): a base model is
trained once with a constant learning rate (the stable phase of a WSD schedule); each candidate is judged by a
short annealing phase, the learning rate decaying to zero, on a blend of BLEND_FRACTION candidate and the rest
base data, against the same annealing on base data alone; the difference of the target metrics is the
candidate's verdict. The paper anneals a ~1B MiniCPM-style base (about 1.1T training tokens) for about 10B
tokens, and reports the check over 90% cheaper than training a model per candidate. Here the base is a
mixforge proxy trained by `base` (or any checkpoint: a mixforge proxy file, a local Hugging Face causal LM
directory), the targets are held-out documents of the run (losses, not benchmarks: a 1M-parameter proxy scores
nothing on a benchmark), and each (candidate, seed) anneal is one Ray task.

Deviations, and why: the decay is linear to zero (MiniCPM's WSD decays exponentially; linear is the common
choice and needs no decay constant); every seed reruns the base-only anneal too, so each candidate's change is
measured against the anneal that saw the same window order, and the spread over seeds says how much of a
change is noise. Held-out documents (`holdout_fraction`, by a hash of the id, as the mixture experiment's
validation split in mixtures/domains.py) are never trained on: not by the base, not in any blend, not by the
classifier chosen from the verdicts. The anneal's base part is drawn from the base query afresh for each
seed, so on a small corpus it repeats documents the base was trained on.

Layout of `out/`:
  targets/<name>.*         token shard of each target's held-out documents
  base/                    proxy.pt (the base, with its optimizer state), vocab.npy, result.json, manifest.json
                           (the header of its training shard, whose tokens are removed after training)
  runs/<candidate>/seed-<s>/result.json   one anneal (a rerun skips those finished with the same settings);
                           manifest.json: the blend's shard header (its tokens are removed after the anneal)
  results.parquet          one row per (candidate, seed, target): losses, and the change against the base anneal
  summary.parquet          one row per candidate: score (mean change in nats/token, positive = better), spread
                           over seeds, verdict, rank
  verification.json        the config, the base and the summary
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from mixtures.config import ProxySettings
from mixtures.domains import HASH_BUCKETS
from storage.shards import write_json_atomic
from storage.token_shards import TokenShard, TokenShardFiles, TokenShardWriter

BLEND_FRACTION = 0.3  # Ultra-FineWeb: 30% candidate, 70% base data in the annealing phase
BASE = "base"  # the base-only anneal, the reference every candidate is compared with
RESULT_FILE, SUMMARY_FILE, RESULTS_FILE, RECORD_FILE = "result.json", "summary.parquet", "results.parquet", \
    "verification.json"
CHECKPOINT_FILE, VOCAB_FILE, MANIFEST_FILE = "proxy.pt", "vocab.npy", "manifest.json"
HF_LEARNING_RATE = 3e-4  # anneal peak for a checkpoint that does not record its learning rate (a Hugging Face model)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STAGE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
READ_ROWS = 256  # documents fetched and tokenised per batch


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Candidate(Section):
    """Data to verify: exactly one of a SQL query, a cluster, a super-cluster, a source, or a stage's output."""

    name: str = Field(description="a short name (letters, digits, _ . -): the candidate's folder and label")
    sql: str | None = Field(None, description="a SELECT over the run's views returning id and text")
    cluster: int | None = Field(None, description="documents of this CLIMB cluster")
    super_cluster: int | None = Field(None, description="documents of this CLIMB super-cluster")
    source: str | None = Field(None, description="documents of this input file (the `source` column)")
    stage: str | None = Field(None, description="a stage's kept documents, e.g. select (a selection's output)")
    run_dir: Path | None = Field(None, description="the run to query (default: the config's run_dir)")

    @model_validator(mode="after")
    def _one_kind(self) -> Candidate:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, _ . - (it names a folder)")
        given = [k for k in ("sql", "cluster", "super_cluster", "source", "stage") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"{self.name}: give exactly one of sql, cluster, super_cluster, source, stage "
                             f"(got {', '.join(given) or 'none'})")
        if self.stage is not None and not _STAGE.match(self.stage):
            raise ValueError(f"stage {self.stage!r} is not a stage name")
        return self

    def select(self) -> str:
        """The candidate as one SELECT over the run's views."""
        if self.sql is not None:
            return self.sql.strip().rstrip(";")
        if self.stage is not None:
            return f"SELECT * FROM stage_{self.stage}"
        column = next(k for k in ("cluster", "super_cluster", "source") if getattr(self, k) is not None)
        value = getattr(self, column)
        literal = str(value) if isinstance(value, int) else "'" + str(value).replace("'", "''") + "'"
        return f"SELECT * FROM docs WHERE {column} = {literal}"


class Target(Section):
    """A target set: the held-out documents of a query (a mixture experiment's target is a domain's)."""

    name: str
    sql: str = Field(description="a SELECT returning id and text; its held-out part is scored")
    run_dir: Path | None = None

    @model_validator(mode="after")
    def _name(self) -> Target:
        if not _NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, _ . - (it names a file)")
        return self


class BaseProxySettings(ProxySettings):
    """The base proxy's shape and training (a constant learning rate after the warm-up)."""

    num_gpus: float | None = Field(None, ge=0, description="GPUs of the base's training task (null: one when "
                                                           "the Ray cluster has GPUs, else none)")


class BaseModelConfig(Section):
    """The model every anneal starts from: a checkpoint, or a proxy trained here once on `sql`."""

    checkpoint: Path | None = Field(None, description="a mixforge proxy file (proxy.pt) or a local Hugging Face "
                                                      "causal LM directory; null: train one")
    sql: str = Field("SELECT * FROM docs", description="base data (its non-held-out part): the base's training "
                                                       "data and the rest of every blend")
    train_tokens: int | None = Field(None, gt=0, description="tokens to train the base on (without a checkpoint)")
    tokenizer: str = Field("o200k_base", description="quicktok encoding or tokenizer.json of a trained base")
    vocab_size: int = Field(4096, ge=16, description="compact vocabulary of a trained base (UNK included)")
    max_epochs: float = Field(4.0, ge=1, description="passes over the base data at most")
    proxy: BaseProxySettings = Field(default_factory=BaseProxySettings)

    @model_validator(mode="after")
    def _trained_or_given(self) -> BaseModelConfig:
        if self.checkpoint is None and self.train_tokens is None:
            raise ValueError("give base.checkpoint, or base.train_tokens to train a base proxy")
        return self


class AnnealConfig(Section):
    """Each annealing phase: its budget, the blend, the learning rate decaying to zero, the seeds."""

    budget_tokens: int = Field(gt=0, description="training tokens of each anneal")
    fraction: float = Field(BLEND_FRACTION, gt=0, lt=1, description="candidate share of the blend "
                                                                    "(Ultra-FineWeb: 0.3)")
    learning_rate: float | None = Field(None, gt=0, description="peak of the decay (null: the base's constant "
                                                                f"rate; {HF_LEARNING_RATE:g} for a Hugging Face model)")
    batch_size: int = Field(8, gt=0)
    seq_len: int | None = Field(None, gt=1, description="window (null: the base's)")
    warmup_fraction: float = Field(0.05, ge=0, lt=1, description="warm-up when the checkpoint has no optimizer "
                                                                 "state (a Hugging Face model)")
    seeds: list[int] = Field(default=[0, 1], min_length=1, description="one anneal per seed and candidate")
    max_epochs: float = Field(4.0, ge=1, description="passes over a small candidate at most")
    eval_tokens: int = Field(32_768, gt=0, description="tokens of each target set scored")
    num_gpus: float | None = Field(None, ge=0, description="GPUs per anneal task (null: one when the Ray cluster "
                                                           "has GPUs, else none)")


class VerifyConfig(Section):
    """One verification: `mixforge verify CONFIG.yaml`, or the `verify` Prefect flow."""

    run_dir: Path = Field(description="the curated run the queries read")
    out: Path | None = Field(None, description="output folder (default: <run_dir>/verify)")
    holdout_fraction: float = Field(0.1, gt=0, lt=1, description="documents held out (by id hash) as target "
                                                                 "sets, never trained on")
    base: BaseModelConfig
    candidates: list[Candidate] = Field(min_length=1)
    targets: list[Target] = Field(min_length=1)
    anneal: AnnealConfig

    @model_validator(mode="after")
    def _consistent(self) -> VerifyConfig:
        names = [c.name for c in self.candidates]
        if BASE in names:
            raise ValueError(f"candidates: the name {BASE!r} is the base-only anneal's")
        for kind, listed in (("candidates", names), ("targets", [t.name for t in self.targets])):
            twice = sorted({n for n in listed if listed.count(n) > 1})
            if twice:
                raise ValueError(f"{kind}: names must be unique; repeated: {', '.join(twice)}")
        if len(set(self.anneal.seeds)) != len(self.anneal.seeds):
            raise ValueError("anneal.seeds: repeated seeds")
        moved = sorted(self.base.proxy.model_fields_set & {"eval_tokens"})
        if moved:
            raise ValueError("base.proxy.eval_tokens: set anneal.eval_tokens (one target size for base and anneals)")
        return self

    @property
    def folder(self) -> Path:
        return self.out or self.run_dir / "verify"

    def candidate(self, name: str) -> Candidate:
        return next(c for c in self.candidates if c.name == name)


# -- documents to tokens -----------------------------------------------------------------------------
def split_clause(holdout_fraction: float, held_out: bool) -> str:
    """The same id-hash split as mixtures.domains (a mixture experiment with this valid_fraction holds out
    the same documents)."""
    cut = int(round(holdout_fraction * HASH_BUCKETS))
    return f"hash(id) % {HASH_BUCKETS} {'<' if held_out else '>='} {cut}"


def split_query(sql: str, holdout_fraction: float, held_out: bool, seed: int | None = None) -> str:
    """`sql`'s documents of one side of the split, in a seeded order (None: by id)."""
    order = "id" if seed is None else f"hash(id, {int(seed)}), id"
    return (f"SELECT id, text FROM ({sql.strip().rstrip(';')}) AS chosen WHERE text IS NOT NULL AND "
            f"{split_clause(holdout_fraction, held_out)} ORDER BY {order}")


def _documents(run_dir: Path, sql: str):
    """Batches of (ids, texts) of a read-only query over the run."""
    import duckdb

    from storage.catalog import QueryRefused, check_read_only, one_line, open_catalog

    con = open_catalog(run_dir)
    statements = check_read_only(con, sql)
    try:
        reader = con.sql(statements[-1]).to_arrow_reader(READ_ROWS)
    except duckdb.Error as error:
        raise QueryRefused(one_line(error)) from None
    for batch in reader:
        yield batch.column("id").to_pylist(), batch.column("text").to_pylist()


def count_documents(run_dir: Path, sql: str) -> int:
    """Documents a query returns (the read-only catalog's refusal, with DuckDB's reason, if it cannot run)."""
    from storage.catalog import open_catalog, query

    return int(query(open_catalog(run_dir), f"SELECT count(*) AS n FROM ({sql}) AS counted").column(0)[0].as_py())


def write_tokens(writer: TokenShardWriter, encoder, run_dir: Path, sql: str, budget: int, *,
                 max_epochs: float = 1.0, whole: bool = False) -> dict:
    """Append `budget` tokens (end-of-text included) of the query's documents, in its order, to `writer`.

    A query too small for the budget is repeated, at most `max_epochs` passes; `whole` stops after the document
    that reaches the budget instead of cutting it (a target set keeps whole documents and their bytes)."""
    docs: list[np.ndarray] = []
    ids: list[str] = []
    sizes: list[int] = []
    tokens = 0
    for batch_ids, texts in _documents(run_dir, sql):
        flat, offsets = encoder.encode_batch(texts)
        for i, doc_id in enumerate(batch_ids):
            docs.append(np.asarray(flat[offsets[i]:offsets[i + 1]], dtype=np.uint32))
            ids.append(doc_id)
            sizes.append(len(texts[i].encode("utf-8")))
            tokens += len(docs[-1]) + 1
        if tokens >= budget:
            break
    unique = tokens
    if not docs:
        return {"tokens": 0, "docs": 0, "unique_docs": 0, "epochs": 0.0, "capped": budget > 0}
    goal = min(budget, int(max_epochs * unique)) if not whole else budget
    written = n_docs = 0
    while written < goal:
        for doc, doc_id, size in zip(docs, ids, sizes, strict=True):
            room = goal - written
            if room <= 0:
                break
            piece = doc if whole or len(doc) + 1 <= room else doc[: room - 1]
            writer.add(piece, [0, len(piece)], ids=[doc_id], n_bytes=size if len(piece) == len(doc) else None)
            written, n_docs = written + len(piece) + 1, n_docs + 1
        if whole:
            break
    return {"tokens": written, "docs": n_docs, "unique_docs": len(docs), "epochs": round(written / unique, 4),
            "capped": written < budget}


def write_query_shard(prefix: Path, encoder, parts: list[tuple[str, Path, str, int]], *, max_epochs: float = 1.0,
                      whole: bool = False, **context) -> dict:
    """A token shard from (label, run_dir, sql, tokens) parts, written in order; the header records each part."""
    with TokenShardWriter(prefix, tokenizer=encoder.name, vocab_size=encoder.vocab_size,
                          eos_id=encoder.eos_id) as writer:
        report = {label: write_tokens(writer, encoder, run_dir, sql, budget, max_epochs=max_epochs, whole=whole)
                  for label, run_dir, sql, budget in parts}
        return writer.close(parts=report, **context)


# -- the base ------------------------------------------------------------------------------------------
def _encoder(tokenizer: str):
    from operators.tokenize import load_encoder

    return load_encoder(tokenizer, threads=1)


def _gpus(requested: float | None) -> float:
    """GPUs for a task: as configured, or one when the Ray cluster has any."""
    import ray

    available = ray.cluster_resources().get("GPU", 0)
    return (1.0 if available else 0.0) if requested is None else (requested if available else 0.0)


def _files_print(path: Path) -> list:
    """Names, sizes and times of a checkpoint's files: a replaced checkpoint invalidates finished anneals."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.relative_to(path)) if path.is_dir() else p.name, p.stat().st_size, p.stat().st_mtime_ns]
            for p in files]


def base_setup(config: VerifyConfig) -> dict:
    """What the base depends on: reused only when this matches."""
    return json.loads(config.model_dump_json(include={"run_dir", "holdout_fraction", "base"}))


def base_proxy_config(config: VerifyConfig, **overrides):
    """The base's ProxyConfig: its shape and settings, a constant learning rate, the targets' size."""
    from mixtures.proxy import ProxyConfig

    settings = {**config.base.proxy.model_dump(exclude={"num_gpus"}), "eval_tokens": config.anneal.eval_tokens,
                "schedule": "constant", "train_tokens": config.base.train_tokens}
    return ProxyConfig(**{**settings, **overrides})


def train_base(config_json: str) -> dict:
    """Train the base proxy once (constant learning rate, optimizer state kept): a Ray task."""
    from mixtures.proxy import CompactVocab, train_proxy

    config = VerifyConfig.model_validate_json(config_json)
    folder = config.folder / "base"
    done = folder / RESULT_FILE
    setup = base_setup(config)
    if done.exists() and json.loads(done.read_text()).get("setup") == setup and (folder / CHECKPOINT_FILE).exists():
        return json.loads(done.read_text())
    base, encoder = config.base, _encoder(config.base.tokenizer)
    folder.mkdir(parents=True, exist_ok=True)
    query = split_query(base.sql, config.holdout_fraction, held_out=False, seed=base.proxy.seed)
    header = write_query_shard(folder / "shard", encoder, [(BASE, config.run_dir, query, base.train_tokens)],
                               max_epochs=base.max_epochs)
    targets = target_paths(config)
    shard = TokenShard.open(folder / "shard")
    CompactVocab.build([shard, *(TokenShard.open(p) for p in targets.values())], base.vocab_size).save(
        folder / VOCAB_FILE)
    result = train_proxy(BASE, folder / "shard", targets, folder / VOCAB_FILE, base_proxy_config(config),
                         checkpoint=folder / CHECKPOINT_FILE, keep_optimizer=True)
    os.replace(TokenShardFiles.of(folder / "shard").header, folder / MANIFEST_FILE)
    TokenShardFiles.of(folder / "shard").remove()
    record = {"checkpoint": str(folder / CHECKPOINT_FILE), "metrics": result.row(), "data": header["parts"],
              "setup": setup}
    write_json_atomic(record, done)
    return record


def base_checkpoint(config: VerifyConfig) -> Path:
    return config.base.checkpoint or config.folder / "base" / CHECKPOINT_FILE


def base_tokenizer(config: VerifyConfig) -> str:
    from mixtures.proxy import describe_checkpoint

    return config.base.tokenizer if config.base.checkpoint is None else \
        describe_checkpoint(config.base.checkpoint)["tokenizer"]


def check_inputs(config: VerifyConfig) -> dict[str, int]:
    """Before any training: the checkpoint is one, every query runs, every candidate and the base have documents
    to train on and every target has held-out ones. Documents per name; a user error says which is wrong."""
    from storage.catalog import QueryRefused

    if not config.run_dir.is_dir():
        raise FileNotFoundError(f"run_dir {config.run_dir}: no run directory there")
    base_tokenizer(config)
    checks = [(f"target {t.name}", t.run_dir or config.run_dir, t.sql, True) for t in config.targets]
    checks += [(f"candidate {c.name}", c.run_dir or config.run_dir, c.select(), False) for c in config.candidates]
    checks.append(("base.sql", config.run_dir, config.base.sql, False))
    counts = {}
    for label, run_dir, sql, held_out in checks:
        try:
            counts[label] = count_documents(run_dir, split_query(sql, config.holdout_fraction, held_out))
        except QueryRefused as error:
            raise QueryRefused(f"{label}: {error}") from None
        if not counts[label]:
            side = "held-out" if held_out else "non-held-out"
            raise ValueError(f"{label}: its query returns no {side} documents (holdout_fraction "
                             f"{config.holdout_fraction})")
    return counts


def target_paths(config: VerifyConfig) -> dict[str, Path]:
    return {t.name: config.folder / "targets" / t.name for t in config.targets}


def prepare_targets(config: VerifyConfig) -> dict[str, int]:
    """Token shards of each target's held-out documents (with the base's tokenizer); rebuilt when settings change."""
    folder = config.folder / "targets"
    tokenizer = base_tokenizer(config)
    setup = {"tokenizer": tokenizer, "holdout": config.holdout_fraction, "eval_tokens": config.anneal.eval_tokens,
             "targets": [json.loads(t.model_dump_json()) for t in config.targets], "run_dir": str(config.run_dir)}
    recorded = folder / "setup.json"
    if recorded.exists() and json.loads(recorded.read_text()) != setup:
        for path in target_paths(config).values():
            TokenShardFiles.of(path).remove()
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(setup, recorded)
    encoder, sizes = _encoder(tokenizer), {}
    for target in config.targets:
        prefix = folder / target.name
        if not TokenShardFiles.of(prefix).header.exists():
            query = split_query(target.sql, config.holdout_fraction, held_out=True)
            write_query_shard(prefix, encoder, [(target.name, target.run_dir or config.run_dir, query,
                                                 config.anneal.eval_tokens + 1)], whole=True, target=target.name)
        shard = TokenShard.open(prefix)
        if shard.n_tokens < 2:
            raise ValueError(f"target {target.name}: no held-out documents (holdout_fraction "
                             f"{config.holdout_fraction}): widen its query or the hold-out")
        sizes[target.name] = shard.n_tokens
    return sizes


# -- the anneals -----------------------------------------------------------------------------------
def anneal_setup(config: VerifyConfig, candidate: str, seed: int) -> dict:
    """What one anneal's result depends on: a finished one is reused only when this matches."""
    checkpoint = base_checkpoint(config)
    spec = None if candidate == BASE else json.loads(config.candidate(candidate).model_dump_json())
    return {"base": _files_print(checkpoint) if checkpoint.exists() else None, "candidate": spec, "seed": seed,
            "anneal": json.loads(config.anneal.model_dump_json(exclude={"seeds", "num_gpus"})),
            "base_sql": config.base.sql, "holdout": config.holdout_fraction, "run_dir": str(config.run_dir),
            "targets": json.loads(json.dumps([t.model_dump(mode="json") for t in config.targets]))}


def anneal_candidate(config_json: str, candidate: str, seed: int) -> dict:
    """Blend `candidate` (or, for BASE, nothing) into base data, anneal the base on it, score the targets: a Ray
    task, skipped when a result with the same settings exists."""
    from mixtures.proxy import ProxyConfig, anneal, describe_checkpoint

    config = VerifyConfig.model_validate_json(config_json)
    folder = config.folder / "runs" / candidate / f"seed-{seed}"
    done, setup = folder / RESULT_FILE, anneal_setup(config, candidate, seed)
    if done.exists() and json.loads(done.read_text()).get("setup") == setup:
        return json.loads(done.read_text())
    a, checkpoint = config.anneal, base_checkpoint(config)
    described = describe_checkpoint(checkpoint)
    encoder = _encoder(described["tokenizer"])
    share = 0 if candidate == BASE else round(a.fraction * a.budget_tokens)
    parts = []
    if share:
        spec = config.candidate(candidate)
        parts.append((candidate, spec.run_dir or config.run_dir,
                      split_query(spec.select(), config.holdout_fraction, held_out=False, seed=seed), share))
    parts.append((BASE, config.run_dir, split_query(config.base.sql, config.holdout_fraction, held_out=False,
                                                    seed=seed), a.budget_tokens - share))
    folder.mkdir(parents=True, exist_ok=True)
    header = write_query_shard(folder / "blend", encoder, parts, max_epochs=a.max_epochs, candidate=candidate,
                               fraction=a.fraction if share else 0.0, seed=seed)
    trained = described["training"]
    rate = a.learning_rate or trained.get("learning_rate") or HF_LEARNING_RATE
    proxy = ProxyConfig(learning_rate=rate, batch_size=a.batch_size, seq_len=a.seq_len or described["seq_len"],
                        warmup_fraction=a.warmup_fraction, train_tokens=a.budget_tokens, eval_tokens=a.eval_tokens,
                        weight_decay=trained.get("weight_decay", ProxyConfig.weight_decay), seed=seed)
    result = anneal(f"{candidate}/seed-{seed}", checkpoint, folder / "blend", target_paths(config), proxy)
    os.replace(TokenShardFiles.of(folder / "blend").header, folder / MANIFEST_FILE)
    TokenShardFiles.of(folder / "blend").remove()
    tokens = header["n_tokens"]
    record = {"candidate": candidate, "seed": seed, "losses": result.losses, "bits_per_byte": result.bits_per_byte,
              "train_loss": result.train_loss, "train_tokens": result.train_tokens, "seconds": result.seconds,
              "device": result.device, "learning_rate": rate, "blend": header["parts"],
              "candidate_share": header["parts"][candidate]["tokens"] / tokens if share else 0.0, "setup": setup}
    write_json_atomic(record, done)
    return record


def run_anneals(config: VerifyConfig) -> list[dict]:
    """Every (candidate, seed) anneal and the base-only anneal of each seed, as Ray tasks (joins the caller's
    Ray: flows.engine.init_ray)."""
    import ray

    task = ray.remote(num_cpus=1, num_gpus=_gpus(config.anneal.num_gpus))(anneal_candidate)
    config_json = config.model_dump_json(exclude_unset=True)
    jobs = [(name, seed) for seed in config.anneal.seeds for name in [BASE, *(c.name for c in config.candidates)]]
    return ray.get([task.remote(config_json, name, seed) for name, seed in jobs])


# -- verdicts --------------------------------------------------------------------------------------
def results_table(records: list[dict]) -> pd.DataFrame:
    """One row per (candidate, seed, target): the anneal's losses and their change against the base-only
    anneal of the same seed (delta > 0: the candidate lowered the target loss)."""
    rows = [{"candidate": r["candidate"], "seed": r["seed"], "target": target, "loss": loss,
             "bpb": r["bits_per_byte"][target], "candidate_share": r["candidate_share"], "seconds": r["seconds"]}
            for r in records for target, loss in r["losses"].items()]
    table = pd.DataFrame(rows)
    base = table[table["candidate"] == BASE].set_index(["seed", "target"])
    keys = pd.MultiIndex.from_frame(table[["seed", "target"]])
    table["base_loss"] = base["loss"].reindex(keys).to_numpy()
    table["base_bpb"] = base["bpb"].reindex(keys).to_numpy()
    table["delta_loss"] = table["base_loss"] - table["loss"]
    table["delta_bpb"] = table["base_bpb"] - table["bpb"]
    return table.sort_values(["candidate", "seed", "target"], ignore_index=True)


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per candidate: score = mean change of target loss over seeds and targets (nats/token, positive =
    better than the base-only anneal), its spread over seeds (std), the worst and best seed, and a verdict:
    better (every seed improved), worse (every seed got worse) or unclear."""
    judged = results[results["candidate"] != BASE]
    per_seed = judged.groupby(["candidate", "seed"])[["delta_loss", "delta_bpb"]].mean().reset_index()
    grouped = per_seed.groupby("candidate")
    summary = pd.DataFrame({
        "score": grouped["delta_loss"].mean(),
        "spread": grouped["delta_loss"].std(ddof=1).fillna(0.0),
        "worst_seed": grouped["delta_loss"].min(),
        "best_seed": grouped["delta_loss"].max(),
        "score_bpb": grouped["delta_bpb"].mean(),
        "n_seeds": grouped["seed"].nunique(),
        "candidate_share": judged.groupby("candidate")["candidate_share"].mean(),
    })
    for target, deltas in judged.groupby("target"):
        summary[f"delta_{target}"] = deltas.groupby("candidate")["delta_loss"].mean()
    summary["verdict"] = np.where(summary["worst_seed"] > 0, "better",
                                  np.where(summary["best_seed"] < 0, "worse", "unclear"))
    summary = summary.sort_values("score", ascending=False)
    summary["rank"] = np.arange(1, len(summary) + 1)
    return summary.rename_axis("candidate").reset_index()


def write_tables(config: VerifyConfig, records: list[dict], base: dict | None) -> dict:
    """results.parquet, summary.parquet and verification.json; the summary as a dict of rows."""
    folder = config.folder
    results = results_table(records)
    summary = summary_table(results)
    for table, name in ((results, RESULTS_FILE), (summary, SUMMARY_FILE)):
        tmp = folder / f".tmp-{name}"
        table.to_parquet(tmp, index=False)
        tmp.replace(folder / name)
    record = {"kind": "verification", "config": json.loads(config.model_dump_json(exclude_unset=True)), "base": base,
              "checkpoint": str(base_checkpoint(config)), "summary": summary.to_dict(orient="records")}
    write_json_atomic(record, folder / RECORD_FILE)
    return record


def verify(config: VerifyConfig) -> dict:
    """The whole verification in one call (the flow runs the same steps as tasks)."""
    import ray

    check_inputs(config)
    prepare_targets(config)
    base = None
    if config.base.checkpoint is None:
        task = ray.remote(num_cpus=1, num_gpus=_gpus(config.base.proxy.num_gpus))(train_base)
        base = ray.get(task.remote(config.model_dump_json(exclude_unset=True)))
    return write_tables(config, run_anneals(config), base)


# -- seeds for the quality classifier ----------------------------------------------------------------
def load_verification(folder: str | Path) -> tuple[VerifyConfig, pd.DataFrame]:
    """A finished verification's config and summary table."""
    folder = Path(folder)
    record, summary = folder / RECORD_FILE, folder / SUMMARY_FILE
    if not record.is_file() or not summary.is_file():
        raise FileNotFoundError(f"{folder}: no finished verification there ({RECORD_FILE} and {SUMMARY_FILE}); "
                                "run `mixforge verify CONFIG` first")
    return VerifyConfig.model_validate(json.loads(record.read_text())["config"]), pd.read_parquet(summary)


def seed_sets(folder: str | Path, best: int = 1, worst: int = 1) -> dict:
    """Ultra-FineWeb's seed choice: positives from the `best` top-ranked candidates that verified better than the
    base-only anneal, negatives from the `worst` bottom-ranked others. Each side is a list of (run_dir, SQL over
    the candidate's documents outside the held-out part), plus a record of the choice for the classifier's
    metadata."""
    config, summary = load_verification(folder)
    ranked = summary.sort_values("score", ascending=False)
    winners = ranked[ranked["verdict"] == "better"].head(best)
    if winners.empty:
        scores = ", ".join(f"{row.candidate} {row.score:+.4f}" for row in ranked.itertuples())
        raise ValueError(f"{folder}: no candidate verified better than the base-only anneal on every seed; "
                         f"scores: {scores}")
    losers = ranked[~ranked["candidate"].isin(winners["candidate"])].tail(worst)
    if losers.empty:
        raise ValueError(f"{folder}: every candidate is a positive; verify at least one more to take negatives from")

    def sources(names) -> list[tuple[str, str]]:
        picked = [config.candidate(n) for n in names]
        return [(str(c.run_dir or config.run_dir), split_query(c.select(), config.holdout_fraction, held_out=False,
                                                               seed=0)) for c in picked]

    def described(frame: pd.DataFrame) -> list[dict]:
        return [{"candidate": row.candidate, "score": float(row.score), "spread": float(row.spread),
                 "verdict": row.verdict} for row in frame.itertuples()]

    return {"positives": sources(winners["candidate"]), "negatives": sources(losers["candidate"]),
            "record": {"verification": str(Path(folder).resolve()), "checkpoint": str(base_checkpoint(config)),
                       "targets": [t.name for t in config.targets], "positives": described(winners),
                       "negatives": described(losers)}}
