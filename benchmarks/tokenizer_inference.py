"""Data mixture inference (mixtures/tokenizer_attack): time and peak memory against the reference's approach.

Same merge list (the first N merges of quicktok's cl100k_base), same category samples (sample-corpus
languages, Python source of the standard library), same LP and solver (HiGHS, warm re-solves); what
differs is the approach:
- reference (alisawuffles/tokenizer-attack): one counting pass per category, as its forked HF trainer
  dumps, for every merge, the new counts of the pairs that changed (`all_pair_counts.json`), held as
  one dict per step; then `run_solver.py::lazy_optimize`: per round, a sweep over the merges with a
  priority queue of every pair's count under the current mixture, the top 10 competitors above each
  merge's count added as constraints until 100 are new, and the LP solved again (Gurobi there).
- ours: one pass for all categories over a joint word table, the counts as sparse change events, the
  violated constraints of all steps found at once per round, and the cuts with positive slack dropped
  after each solve (solver.py).
Each runs in a fresh process: peak memory is its peak RSS above what loading merges and samples took.
Printed: seconds of counting and solving, peak MB, the ratios, and how far apart the two mixtures are.

    .venv/bin/python benchmarks/tokenizer_inference.py --quick   # 1,000 merges, 4 x 32 KiB (minutes)
    .venv/bin/python benchmarks/tokenizer_inference.py           # 10,000 merges, 6 x 512 KiB
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path and its name would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
REPO = Path(__file__).resolve().parents[1]
HANDBOOK = REPO / "data" / "sample" / "docs" / "debian-handbook.parquet"
ENCODING = "cl100k_base"
COMPETITORS, MAX_ADD = 10, 100  # the reference's competitor_batch_size and max_add


def category_samples(langs: list[str], max_bytes: int) -> dict[str, list[str]]:
    import sysconfig

    import duckdb

    from mixtures.tokenizer_attack.samples import take_bytes

    samples = {}
    for lang in langs:
        rows = duckdb.sql(f"SELECT text FROM '{HANDBOOK}' WHERE lang = '{lang}' ORDER BY url").fetchall()
        samples[lang], _ = take_bytes((text for (text,) in rows), max_bytes)
    code = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("**/*.py"))
    samples["code"], _ = take_bytes((f.read_text(encoding="utf-8", errors="replace") for f in code), max_bytes)
    return samples


def reference_counts(merges, words: Counter, n_merges: int) -> list[dict]:
    """One category's `all_pair_counts`: step 0 every pair's count, step t+1 the new counts of the pairs
    merge t changed (the forked BpeTrainer's dump, kept in memory instead of written as JSON)."""
    from mixtures.tokenizer_attack.pair_counts import _merge

    vocab = list(words)
    symbols = merges.symbols(vocab)
    freq = [words[w] for w in vocab]
    base = 1 << 40
    counts: dict[int, int] = {}
    where: dict[int, set[int]] = {}
    for i, syms in enumerate(symbols):
        for a, b in zip(syms, syms[1:], strict=False):
            counts[a * base + b] = counts.get(a * base + b, 0) + freq[i]
            where.setdefault(a * base + b, set()).add(i)
    dumps = [{(k // base, k % base): v for k, v in counts.items()}]
    for t in range(n_merges):
        a, b, c = int(merges.left[t]), int(merges.right[t]), int(merges.merged[t])
        changed: dict[tuple[int, int], int] = {}
        for i in where.pop(a * base + b, ()):
            new, changes = _merge(symbols[i], a, b, c, base)
            symbols[i] = new
            for key, delta in changes.items():
                counts[key] = counts.get(key, 0) + delta * freq[i]
                changed[(key // base, key % base)] = counts[key]
                if delta > 0:
                    where.setdefault(key, set()).add(i)
        dumps.append(changed)
    return dumps


def reference_solve(merge_list: list[tuple[int, int]], pair_counts: dict[str, list[dict]],
                    denoms: dict[str, float]) -> dict[str, float]:
    """run_solver.py::lazy_optimize, its data structures and sweep as written, HiGHS for Gurobi."""
    from mixtures.tokenizer_attack.solver import _IncrementalLP

    langs, T = list(pair_counts), len(merge_list)
    K = len(langs)
    pair_to_id: dict[tuple[int, int], int] = {}
    for i in range(T):
        for apc in pair_counts.values():
            for pair in apc[i]:
                pair_to_id.setdefault(pair, len(pair_to_id))
        if i == 0:
            initial_cut = len(pair_to_id)
    initial = np.zeros((K, initial_cut))
    for k, apc in enumerate(pair_counts.values()):
        for pair, count in apc[0].items():
            initial[k, pair_to_id[pair]] = count
    deltas = {}  # compute_count_deltas: per category and step, the change of each pair it dumped
    for lang, apc in pair_counts.items():
        cumulative, deltas[lang] = dict(apc[0]), []
        for pc in apc[1:T]:
            deltas[lang].append({pair: count - cumulative.get(pair, 0) for pair, count in pc.items()})
            cumulative.update(pc)
    delta_arrays = []  # per step: (pair ids, K x n count changes)
    for i in range(T - 1):
        stack: dict[int, np.ndarray] = {}
        for k, lang in enumerate(langs):
            for pair, change in deltas[lang][i].items():
                stack.setdefault(pair_to_id[pair], np.zeros(K))[k] = change
        keys = np.array(list(stack), np.int64)
        delta_arrays.append((keys, np.stack([stack[k] for k in keys], axis=1) if stack else np.zeros((K, 0))))
    transcripts: dict[tuple[str, int], list[tuple[int, int]]] = {}
    for lang, apc in pair_counts.items():
        for i, pc in enumerate(apc[:T]):
            for pair, count in pc.items():
                transcripts.setdefault((lang, pair_to_id[pair]), []).append((i, count))

    def count_at(i: int, lang: str, pid: int) -> int:
        transcript = transcripts.get((lang, pid), [])
        at = bisect.bisect_right(transcript, (i, 2 << 62))
        return transcript[at - 1][1] if at else 0

    lp = _IncrementalLP(K)
    lp.add_slacks(T)  # viol_v: one per merge from the start
    pair_col: dict[int, int] = {}
    denom = np.array([denoms[lang] for lang in langs])
    alpha, viol, pair_viol = np.full(K, 1 / K), np.zeros(T), {}
    done: set[tuple[int, int]] = set()
    while True:
        mix = alpha / denom
        prios = np.zeros(len(pair_to_id))
        prios[:initial_cut] = mix @ initial
        for pid, v in pair_viol.items():
            prios[pid] -= max(0.0, v)
        heap = [(-p, pid) for pid, p in enumerate(prios)]
        heapq.heapify(heap)
        new = 0
        for i, merge in enumerate(merge_list):
            mid = pair_to_id.get(merge)
            if mid is not None:
                cutoff = prios[mid] + max(0.0, pair_viol.get(mid, 0.0)) + max(0.0, viol[i]) + 1e-6
                popped, candidates = [], []
                while len(candidates) < COMPETITORS and heap:
                    item = heapq.heappop(heap)
                    if prios[item[1]] != -item[0]:
                        continue  # a stale entry
                    popped.append(item)
                    if -item[0] <= cutoff:
                        break
                    if item[1] != mid and (i, item[1]) not in done:
                        candidates.append(item[1])
                for item in popped:
                    heapq.heappush(heap, item)
                if candidates:
                    own = np.array([count_at(i, lang, mid) for lang in langs]) / denom
                    coef = np.array([own - np.array([count_at(i, lang, c) for lang in langs]) / denom
                                     for c in candidates])
                    fresh = [c for c in candidates if c not in pair_col]
                    for c in fresh:
                        pair_col[c] = lp.n_cols + fresh.index(c)
                    lp.add_slacks(len(fresh))
                    lp.add_cuts(coef, np.full(len(candidates), K + i), np.array([pair_col[c] for c in candidates]))
                    done.update((i, c) for c in candidates)
                    new += len(candidates)
            if i < T - 1:
                items, changes = delta_arrays[i]
                prios[items] += mix @ changes
                for pid in items.tolist():
                    heapq.heappush(heap, (-prios[pid], pid))
            if new >= MAX_ADD:
                break
        if not new:
            break
        x = lp.solve()
        alpha, viol = x[:K].clip(min=0), x[K:K + T]
        alpha /= alpha.sum()
        pair_viol = {pid: x[col] for pid, col in pair_col.items()}
    return dict(zip(langs, alpha.tolist(), strict=True))


def worker(approach: str, n_merges: int, langs: list[str], sample_bytes: int) -> dict:
    from mixtures.tokenizer_attack import infer_mixture, load_merges

    merges = load_merges(ENCODING)
    samples = category_samples(langs, sample_bytes)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    if approach == "ours":
        estimate = infer_mixture(merges, samples, n_merges=n_merges)
        shares, seconds = estimate.proportions, estimate.seconds
    else:
        words = {name: merges.words(texts) for name, texts in samples.items()}
        dumps = {name: reference_counts(merges, w, n_merges) for name, w in words.items()}
        counted = time.perf_counter() - started
        # the reference's `pairs` denominator (its released-tokenizer runs; ours too), then byte shares
        denoms = {name: float(sum(dump[0].values())) for name, dump in dumps.items()}
        merge_list = list(zip(merges.left[:n_merges].tolist(), merges.right[:n_merges].tolist(), strict=True))
        weights = reference_solve(merge_list, dumps, denoms)
        size = {name: sum(len(t.encode("utf-8")) for t in texts) / denoms[name] for name, texts in samples.items()}
        total = sum(weights[name] * size[name] for name in weights)
        shares = {name: weights[name] * size[name] / total for name in weights}
        seconds = {"count": counted, "solve": time.perf_counter() - started - counted}
    return {"shares": shares, "count_s": seconds["count"], "solve_s": seconds["solve"],
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 merges, 4 categories of 32 KiB")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    n_merges, langs, size = (1000, ["en", "de", "ru"], 32 * 1024) if args.quick else \
        (10_000, ["en", "de", "ru", "ja", "fr"], 512 * 1024)
    if args.worker:
        print(json.dumps(worker(args.worker, n_merges, langs, size)))
        return
    print(f"{ENCODING}, first {n_merges:,} merges; categories {', '.join(langs)}, code; {size // 1024} KiB each")
    results = {}
    for approach in ("ours", "reference"):
        command = [sys.executable, __file__, "--worker", approach, *(["--quick"] if args.quick else [])]
        results[approach] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                                      cwd=REPO).stdout.splitlines()[-1])
    print(f"{'':10s} {'count s':>8s} {'solve s':>8s} {'total s':>8s} {'peak MB':>8s}")
    for approach, r in results.items():
        print(f"{approach:10s} {r['count_s']:8.2f} {r['solve_s']:8.2f} {r['count_s'] + r['solve_s']:8.2f} "
              f"{r['peak_mb']:8.0f}")
    ours, ref = results["ours"], results["reference"]
    total = (ref["count_s"] + ref["solve_s"]) / (ours["count_s"] + ours["solve_s"])
    print(f"ratio (reference / ours): count {ref['count_s'] / ours['count_s']:.1f}x, solve "
          f"{ref['solve_s'] / ours['solve_s']:.1f}x, total {total:.1f}x, "
          f"peak memory {ref['peak_mb'] / max(ours['peak_mb'], 1):.1f}x")
    gap = max(abs(ours["shares"][k] - ref["shares"][k]) for k in ours["shares"])
    print(f"mixtures: ours {json.dumps({k: round(v, 4) for k, v in ours['shares'].items()})}")
    print(f"          reference {json.dumps({k: round(v, 4) for k, v in ref['shares'].items()})}  (max gap {gap:.4f})")


if __name__ == "__main__":
    main()
