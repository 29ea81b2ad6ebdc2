"""A whole mixture experiment on a curated run: targets, vocabulary, proxy rounds, fit, best mixture.

Layout of `out/`:
  targets/<domain>.*      token shard (storage/token_shards.py) of the domain's held-out documents (a target set)
  vocab.npy, setup.json   the compact proxy vocabulary shared by every proxy, and the settings it was built for
  runs/<run>/             each proxy's shard header (manifest.json), result.json (a rerun skips finished runs) and
                          proxy.pt, the trained model
  rounds/<i>/ratios.csv   what round i proposed (and metrics.csv with what it measured)
  ratios.csv, metrics.csv every run: the mixture it trained on (`run`, one column per domain), its metrics
  fit/                    the predictor (models, fit.json, report.json)
  best_mixture.yaml/.json the chosen mixture, its predicted target loss and the tokens it needs
  best.*                  token shard of the best mixture, when export.budget_tokens is set
  experiment.json         config and summary

Proxies run as Ray tasks (one CPU each): each materializes its mixture from the shards, trains and
scores the target sets. With `trainer_command`, a round's ratios.csv is handed to that command instead.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from mixtures.config import ExperimentConfig
from mixtures.domains import CorpusDomains
from mixtures.io import export_mixture, write_metrics, write_mixtures
from mixtures.materialize import materialize
from mixtures.proxy import CompactVocab, ProxyConfig, run_external_trainer, train_proxy
from mixtures.regression import CLIMB_LIGHTGBM
from mixtures.sampler import MixtureSampler
from mixtures.search import IterativeSearch, SearchResult
from storage.token_shards import TokenShard, TokenShardFiles

RESULT_FILE = "result.json"
PROXY_FILE = "proxy.pt"  # the trained proxy (mixtures.proxy.save_checkpoint): PreSelect scores documents with it


def _open_corpus(config: ExperimentConfig) -> CorpusDomains:
    c = config.corpus
    return CorpusDomains(c.run_dir, c.by, stage=c.stage, valid_fraction=c.valid_fraction)


def _proxy_config(config: ExperimentConfig) -> ProxyConfig:
    settings = config.proxy.model_dump(exclude={"num_gpus"})
    return ProxyConfig(**settings)


def _training_setup(config: ExperimentConfig) -> dict:
    """What a proxy's result depends on besides its mixture: a finished run is reused only if it matches."""
    return json.loads(config.model_dump_json(include={"corpus", "targets", "materialize", "proxy", "sampler"}))


def train_mixture(config_json: str, run: str, weights: dict[str, float]) -> dict:
    """One proxy, start to end: materialize `weights`, train, score the targets. Runs inside a Ray task."""
    config = ExperimentConfig.model_validate_json(config_json)
    out = Path(config.out)
    folder = out / "runs" / run
    done = folder / RESULT_FILE
    setup = _training_setup(config)
    if done.exists():
        result = json.loads(done.read_text())
        if result.get("setup") == setup and result["requested"].keys() == weights.keys() and np.allclose(
                [result["requested"][d] for d in weights], list(weights.values())):
            return result
    m = config.materialize
    manifest = materialize(_open_corpus(config), weights, m.budget_tokens, folder / "shard", max_epochs=m.max_epochs,
                           split="train", seed=config.sampler.seed, tokenizer=m.tokenizer)
    targets = {t: str(out / "targets" / t) for t in config.targets}
    proxy = train_proxy(run, folder / "shard", targets, out / "vocab.npy", _proxy_config(config),
                        checkpoint=folder / PROXY_FILE)
    shard = TokenShardFiles.of(folder / "shard")
    os.replace(shard.header, folder / "manifest.json")  # the record stays; the tokens can be rebuilt from it
    shard.remove()
    result = {"requested": weights, "realised": manifest["realised_weights"], "metrics": proxy.row(),
              "setup": setup}
    done.write_text(json.dumps(result, indent=2))
    return result


class MixtureExperiment:
    """Drives one experiment; `run()` does everything, the flow calls the steps one by one."""

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.out = Path(config.out)
        self.corpus = _open_corpus(config)
        self.domain_tokens = self.corpus.token_counts("train")
        domains = list(self.domain_tokens.tokens.index)
        unknown = [t for t in config.targets if t not in domains]
        if unknown:
            raise ValueError(f"targets {unknown} are not domains of {config.corpus.by}: {', '.join(domains)}")
        s = config.sampler
        self.sampler = MixtureSampler.from_token_counts(self.domain_tokens.tokens.to_dict(), temperature=s.temperature,
                                                        max_usage=s.max_usage, min_weight=s.min_weight, seed=s.seed)

    def prepare(self) -> dict:
        """Target sets (held-out documents of each target domain) and the shared proxy vocabulary."""
        m = self.config.materialize
        self.out.mkdir(parents=True, exist_ok=True)
        setup, recorded = _training_setup(self.config), self.out / "setup.json"
        if recorded.exists() and json.loads(recorded.read_text()) != setup:  # built for other settings
            shutil.rmtree(self.out / "targets", ignore_errors=True)
            (self.out / "vocab.npy").unlink(missing_ok=True)
        recorded.write_text(json.dumps(setup, indent=2))
        targets = {}
        for target in self.config.targets:
            prefix = self.out / "targets" / target
            if not TokenShardFiles.of(prefix).header.exists():
                materialize(self.corpus, {target: 1.0}, self.config.proxy.eval_tokens + 1, prefix, max_epochs=1,
                            split="valid", tokenizer=m.tokenizer)
            targets[target] = TokenShard.open(prefix)
        if not (self.out / "vocab.npy").exists():
            prior = self.domain_tokens.tokens / self.domain_tokens.tokens.sum()
            sample = self.out / "vocab-sample"
            materialize(self.corpus, prior.to_dict(), m.vocab_sample_tokens, sample, max_epochs=1, split="train",
                        tokenizer=m.tokenizer)
            CompactVocab.build([TokenShard.open(sample), *targets.values()], m.vocab_size).save(self.out / "vocab.npy")
            TokenShardFiles.of(sample).remove()
        return {t: shard.n_tokens for t, shard in targets.items()}

    def evaluate(self, proposals: pd.DataFrame, round_index: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Train and score one round of mixtures; the mixtures actually trained and their metrics."""
        folder = self.out / "rounds" / str(round_index)
        ratios = write_mixtures(proposals, folder / "ratios.csv")
        if self.config.trainer_command:
            metrics = run_external_trainer(self.config.trainer_command, ratios, folder / "metrics.csv")
            return proposals, metrics
        import ray  # joins the caller's Ray (flows.engine.init_ray), else starts a default local one

        task = ray.remote(num_cpus=1, num_gpus=self.config.proxy.num_gpus)(train_mixture)
        config_json = self.config.model_dump_json()
        results = ray.get([task.remote(config_json, run, {d: float(w) for d, w in row.items() if w > 0})
                           for run, row in proposals.iterrows()])
        realised = pd.DataFrame([r["realised"] for r in results], index=proposals.index,
                                columns=proposals.columns).fillna(0.0)
        metrics = pd.DataFrame([r["metrics"] for r in results]).set_index("run")
        write_metrics(metrics, folder / "metrics.csv")
        return realised, metrics

    def search(self) -> IterativeSearch:
        r = self.config.regression
        params = r.params if r.params is not None or r.model == "linear" else (
            dict(CLIMB_LIGHTGBM) if self.config.method == "climb" else None)
        return IterativeSearch(self.sampler, self.evaluate, self.config.target_metrics(), self.config.rounds,
                               model=r.model, params=params, n_candidates=r.n_samples, top_k=r.top_k,
                               num_threads=r.num_threads, seed=self.config.sampler.seed)

    def export(self, result: SearchResult) -> dict:
        """Write ratios/metrics of every run, the fit with its report, the best mixture (and its shard)."""
        write_mixtures(result.mixtures, self.out / "ratios.csv")
        write_metrics(result.metrics, self.out / "metrics.csv")
        targets = self.config.target_metrics()
        report = result.regressor.fit_report(result.mixtures, result.metrics[targets])
        result.regressor.save(self.out / "fit")
        (self.out / "fit" / "report.json").write_text(json.dumps(report, indent=2))
        best = result.best
        predicted = {t: float(v) for t, v in result.regressor.predict_frame(best.to_frame().T).iloc[0].items()}
        tokens = self.domain_tokens.tokens
        plan = {}
        if self.config.export.budget_tokens:
            budget = self.config.export.budget_tokens
            plan = {d: {"tokens": round(w * budget), "epochs": round(w * budget / tokens[d], 4)}
                    for d, w in best.items() if w > 0}
        context = {"targets": targets, "predicted": predicted, "method": self.config.method,
                   "runs": len(result.mixtures), "by": self.config.corpus.by,
                   "run_dir": str(self.config.corpus.run_dir), "plan": plan}
        export_mixture(best.to_dict(), self.out / "best_mixture.yaml", **context)
        export_mixture(best.to_dict(), self.out / "best_mixture.json", **context)
        summary = {"best": best.to_dict(), "predicted": predicted, "report": report, "rounds": result.rounds,
                   "domain_tokens": tokens.to_dict(), "token_source": self.domain_tokens.token_source}
        if self.config.export.budget_tokens:
            manifest = materialize(self.corpus, best.to_dict(), self.config.export.budget_tokens, self.out / "best",
                                   max_epochs=self.config.export.max_epochs, split="all",
                                   tokenizer=self.config.materialize.tokenizer)
            summary["best_shard"] = {"path": str(self.out / "best"), "tokens": manifest["n_tokens"]}
        (self.out / "experiment.json").write_text(json.dumps(
            {"config": json.loads(self.config.model_dump_json()), **summary}, indent=2, default=float))
        return summary

    def run(self) -> dict:
        self.prepare()
        return self.export(self.search().run())
