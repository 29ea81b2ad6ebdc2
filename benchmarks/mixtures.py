"""Mixture-experiment speed: regression fit + candidate simulation, and proxy training on CPU.

1. RegMix's released runs (512 x 17 domains, Pile-CC target): fit time and time to rank N candidate
   mixtures for the optimum, LightGBM and linear. Reference: RegMix's notebook way, the full 1000-tree
   ensemble predicting every candidate; ours screens with the first 100 trees. Printed: both times,
   the speedup, and how far apart the two optima are (L1).
2. Every predictor (lightgbm, lightgbm_climb, linear, log_linear, gp) on the same runs: fit, optimum
   and (--full) 5-fold cross-validation times; goal: LightGBM fit + 1M-candidate optimum under 30 s.
3. Proxy training tokens/s of a ~0.85M-parameter proxy on one thread, against this CPU's own
   single-thread matmul peak measured in the same run (model FLOPs utilisation, 6 x params per token).

    .venv/bin/python benchmarks/mixtures.py            # --quick: 200k candidates, 20k training tokens
    .venv/bin/python benchmarks/mixtures.py --full     # 1M candidates, 100k training tokens
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
REGMIX = Path(__file__).resolve().parents[2] / "shared" / "data" / "regmix"
TARGET = "metric/the_pile_pile_cc_val_loss"


def regression(n_candidates: int, threads: int) -> None:
    from mixtures.io import join_runs, read_metrics, read_mixtures
    from mixtures.regression import RegMixRegressor
    from mixtures.sampler import MixtureSampler

    X, Y = join_runs(read_mixtures(REGMIX / "train_mixture_1m.csv"), read_metrics(REGMIX / "train_pile_loss_1m.csv"))
    started = time.perf_counter()
    candidates = MixtureSampler.from_mixtures(X, seed=0).candidates(n_candidates)
    sampled = time.perf_counter() - started
    print(f"candidates: {n_candidates:,} sampled in {sampled:.2f} s ({n_candidates / sampled:,.0f}/s)")
    for model in ("lightgbm", "linear"):
        started = time.perf_counter()
        fitted = RegMixRegressor(model, num_threads=threads).fit(X, Y[TARGET])
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        ours = fitted.optimum(top_k=128, candidates=candidates)
        ours_s = time.perf_counter() - started
        started = time.perf_counter()
        reference = candidates[np.argsort(fitted.predict(candidates), kind="stable")[:128]].mean(axis=0)
        reference_s = time.perf_counter() - started
        distance = np.abs(ours.to_numpy() - reference).sum()
        print(f"{model:8s} fit {fit_s:6.2f} s | optimum over {n_candidates:,}: {ours_s:6.2f} s "
              f"({n_candidates / ours_s:,.0f} mixtures/s) vs full-model reference {reference_s:6.2f} s: "
              f"x{reference_s / ours_s:.1f}, optima L1 apart {distance:.4f}, "
              f"pile_cc {ours['train_the_pile_pile_cc']:.3f}")


def models(n_candidates: int, cv: bool) -> None:
    """Every predictor on RegMix's 512 runs: fit, 5-fold CV and the optimum over n candidates (one thread)."""
    from mixtures.io import join_runs, read_metrics, read_mixtures
    from mixtures.regression import CANDIDATES, RegMixRegressor, compare_models

    X, Y = join_runs(read_mixtures(REGMIX / "train_mixture_1m.csv"), read_metrics(REGMIX / "train_pile_loss_1m.csv"))
    for model in CANDIDATES:
        started = time.perf_counter()
        fitted = RegMixRegressor(model, num_threads=2).fit(X, Y[TARGET])
        fit_s = time.perf_counter() - started
        started = time.perf_counter()
        fitted.optimum(n_candidates, 128)
        optimum_s = time.perf_counter() - started
        line = f"{model:15s} fit {fit_s:6.2f} s | optimum over {n_candidates:,}: {optimum_s:6.2f} s"
        if cv:
            started = time.perf_counter()
            compare_models(X, Y[TARGET], (model,))
            line += f" | 5-fold CV {time.perf_counter() - started:6.2f} s"
        print(f"{line} | fit + optimum {fit_s + optimum_s:6.2f} s")


def matmul_peak() -> float:
    """Single-thread float32 GFLOP/s of a 512 x 512 matmul (the best of a few)."""
    import torch

    a, b = torch.randn(512, 512), torch.randn(512, 512)
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 512**3 / best / 1e9


def proxy(tokens: int) -> None:
    import torch

    from mixtures.proxy import CompactVocab, ProxyConfig, train_proxy
    from storage.token_shards import write_token_shard

    torch.set_num_threads(1)
    peak = matmul_peak()
    rng = np.random.default_rng(0)
    stream = rng.zipf(1.3, size=tokens + 10_000).clip(max=50_000).astype(np.uint32)  # a Zipfian token stream
    config = ProxyConfig(eval_tokens=4096)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        train = write_token_shard(folder / "train", stream[:tokens], [0, tokens], n_bytes=4 * tokens,
                                  tokenizer="zipf", vocab_size=200_019)
        valid = write_token_shard(folder / "valid", stream[tokens:], [0, 10_000], n_bytes=40_000,
                                  tokenizer="zipf", vocab_size=200_019)
        CompactVocab.build([train, valid], 4096).save(folder / "vocab.npy")
        result = train_proxy("bench", folder / "train", {"valid": folder / "valid"}, folder / "vocab.npy", config)
    flops = 6 * result.params * result.tokens_per_second
    print(f"proxy: {result.params:,} params, {result.train_tokens:,} tokens in {result.seconds:.1f} s: "
          f"{result.tokens_per_second:,.0f} tokens/s on 1 thread ({flops / 1e9:.1f} GFLOP/s) vs matmul peak "
          f"{peak:.1f} GFLOP/s: MFU {flops / 1e9 / peak:.0%}; RegMix's 1B tokens per proxy would take "
          f"{1e9 / result.tokens_per_second / 3600:,.0f} core-hours")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="1M candidates and 100k training tokens")
    parser.add_argument("--threads", type=int, default=2, help="LightGBM prediction threads")
    args = parser.parse_args()
    regression(1_000_000 if args.full else 200_000, args.threads)
    models(1_000_000 if args.full else 100_000, cv=args.full)
    proxy(100_000 if args.full else 20_000)


if __name__ == "__main__":
    main()
