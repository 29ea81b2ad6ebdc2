"""Where operators meet Ray: a stage runs one worker per unit (an input file or a part of one, an upstream shard).

A stage is one Ray task per pending unit (fan_out); Ray keeps its worker processes warm across tasks and
stages, and each process builds a stage's worker once, so a worker that loads a model (language ID, an
embedder) loads it once per process and a stage starts in well under a second.
Each unit writes its shards atomically and then its completion record (storage.shards), which is what
makes a killed run resumable at unit granularity without duplicates. A unit that fails for a reason of
the environment (operators.reader.TransientInputError: the network, throttling, credentials, after the
reader's retries) writes nothing and is not marked done; the others finish, then the stage raises
UnitsFailed naming it, so a rerun retries exactly those units.

Resume is one policy (storage.shards.keep_or_restart): a stage's fingerprint (inputs with sizes and
checksums, config, code version of its operators) decides whether its completed units are kept; a rerun
with another one stops with RunMismatch naming what differs, unless `restart`. Work that is not a unit
of a stage (the dedup drivers' global steps) reaches Ray through `fan_out`; nothing else calls ray.init.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa
from tqdm.auto import tqdm

from operators.base import Operator, OperatorChain, StageStats
from operators.reader import TransientInputError
from storage.manifest import Manifest, now
from storage.shards import (
    RunMismatch,
    ShardWriter,
    code_version,
    completed_units,
    discard_partial_unit,
    keep_or_restart,
    mark_unit_done,
)

__all__ = ["RunMismatch", "ShardWorker", "StagedChain", "UnitsFailed", "cluster_gpus", "code_version", "fan_out",
           "fingerprint", "in_process", "init_ray", "record_stage", "run_stage", "split_records", "start_services",
           "start_stage"]


class UnitWorker(Protocol):
    """Processes one unit into the writer; returns each operator's stats (name -> StageStats)."""

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]: ...


def init_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to `address` (or RAY_ADDRESS), else start an embedded local Ray, quiet and lean.

    Quiet: a healthy run shows progress bars and its summary only, no warnings or error-looking lines
    (MIXFORGE_VERBOSE=1, `mixforge --verbose`, shows them): Ray's own INFO/WARNING lines, Ray Data's, and
    the core worker's "E" line about actor constructor arguments in the object store (Ray Data puts them
    there itself; the actors restart fine), and the notice that a local Ray uses token authentication
    (its default).
    """
    import ray

    if ray.is_initialized() or in_process():
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    verbose = bool(os.environ.get("MIXFORGE_VERBOSE"))
    if not verbose:
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
        os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")
        logging.getLogger("ray._private.authentication").setLevel(logging.ERROR)
    level = logging.INFO if verbose else logging.ERROR
    address = address or os.environ.get("RAY_ADDRESS")  # neither: an embedded local Ray
    with contextlib.nullcontext() if verbose else _without_ray_startup_notice():
        if address:
            try:
                ray.init(address=address, log_to_driver=False, logging_level=level,
                         runtime_env=_forwarded_variables())
            except ConnectionError as error:  # `ray start` turns token authentication on; only "auto" finds it
                if address == "auto" or os.environ.get("RAY_AUTH_MODE"):
                    raise
                raise ConnectionError(f"{error}; if the cluster was started with `ray start`, set RAY_AUTH_MODE="
                                      "token (the token is RAY_AUTH_TOKEN, else ~/.ray/auth_token) or use "
                                      "RAY_ADDRESS=auto on its head node") from error
        else:
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
                     logging_level=level)
    atexit.unregister(_shutdown_ray)  # once, and after Ray's own atexit shutdown so that it runs before it
    atexit.register(_shutdown_ray)


FORWARD_ENV = "MIXFORGE_FORWARD_VARIABLES"  # names, comma-separated: see _forwarded_variables


def _forwarded_variables() -> dict | None:
    """The runtime environment that gives the job's workers this process's values of the variables named in
    MIXFORGE_FORWARD_VARIABLES (`mixforge up` names those its head was started without: the head's workers
    run with the head's environment, not the command's). None when none are named: a runtime environment
    costs a job's first tasks 0.5-1 s (2 cores), and a cluster's nodes keep their own (docs/cluster.md)."""
    names = [name for name in os.environ.get(FORWARD_ENV, "").split(",") if name in os.environ]
    return {"env_vars": {name: os.environ[name] for name in names}} if names else None


def _shutdown_ray() -> None:
    """ray.shutdown at exit, less two waits that buy nothing here (a cold CLI run's exit: 1.75 s before, about 1.0 s
    now, measured on 2 cores): Ray's own atexit shutdown first sleeps 0.5 s for log lines to reach the driver
    (none do: log_to_driver=False), and an embedded Ray's autoscaler monitor, which has nothing to autoscale
    and does not exit on the SIGTERM ray.shutdown sends, is waited on for 1 s before the kill: it is killed
    first. Ray 2.60's node object is private: a Ray without one is left to the plain shutdown."""
    import ray
    from ray._private import ray_constants

    node = getattr(ray._private.worker, "_global_node", None)
    with contextlib.suppress(AttributeError, OSError, subprocess.TimeoutExpired):
        for process_info in node.all_processes.get(ray_constants.PROCESS_TYPE_MONITOR, []):
            process_info.process.kill()
            process_info.process.wait(timeout=5)
    ray.shutdown()


@contextlib.contextmanager
def start_services(address: str | None = None, num_cpus: int | None = None,
                   warm_up: Callable[..., object] | None = None, warm_up_args: tuple = (),
                   warm_workers: Callable[[], int | None] | None = None) -> Iterator[None]:
    """Ray, Prefect's API and warm Ray workers for the flow run inside this context; the CLI's way into a flow.

    A cold `mixforge curate` waits for three start-ups, done together here instead of one after the other:
    Prefect's temporary API server (when no PREFECT_API_URL names a server), Ray (init_ray) and the workers'
    first loads: `warm_up(*warm_up_args)` runs once per CPU, or on `warm_workers()` at most (the first pass's
    units: more would load models into workers the run never uses; Ray gives a task the idle worker used
    last, so the warm ones get the work), in the background until the context ends, so the flow's first tasks
    find workers with their models loaded while the flow itself starts. Called before Prefect is imported,
    the server is started as a subprocess first of all (TemporaryPrefectServer), while this process starts
    Ray and imports Prefect; in a process that has imported Prefect already (a test, a notebook) Prefect's
    own temporary server is started, or reused. A warm-up that fails is ignored (the pass that needs it fails
    with its own error), and a server that does not start is left to Prefect, which starts its own or says
    why not. Measured on 2 cores (benchmarks/README.md): a cold `mixforge curate` on 100 documents took 41 s
    with the start-ups one after the other and the workers loading in the flow, 12-15 s so, and about 9 s
    with a Ray head and a Prefect server kept running (`mixforge up`, or RAY_ADDRESS and PREFECT_API_URL).
    """
    configured = os.environ.get("PREFECT_API_URL")  # needs no temporary server (a profile's URL: Prefect's check)
    server = None if "prefect" in sys.modules or configured else TemporaryPrefectServer.spawn()
    init_ray(address, num_cpus)
    global _warming
    if warm_up is not None and not in_process():
        _warming = threading.Thread(target=_warm_workers, args=(warm_up, warm_up_args, warm_workers), name="warm-up",
                                    daemon=True)
        _warming.start()
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED, temporary_settings

    wanted = not PREFECT_API_URL.value() and PREFECT_SERVER_EPHEMERAL_ENABLED.value()
    if server is not None and (not wanted or not server.wait()):
        server.stop()
        server = None
    if server is None and wanted:
        _start_prefects_own_server()
    # heartbeats tell a lasting server that a run crashed; this server ends with the run, and the flow's end
    # waits up to 1 s (0.5 s on average) for the heartbeat thread's sleep
    ours = {PREFECT_API_URL: server.api_url, "flows.heartbeat_frequency": None} if server else None
    try:
        with temporary_settings(updates=ours) if ours else contextlib.nullcontext():
            yield
    finally:
        if _warming is not None:
            _warming.join()
            _warming = None


_warming: threading.Thread | None = None  # start_services' warm-up, while it runs


def _wait_for_warm_up() -> None:
    """A stage's first tasks wait for start_services' warm-up to end: submitted while it runs, they would go to
    a cold worker (the warm ones are busy warming) and load the same models again there, on the same CPUs
    (a cold run on 100 documents: its one unit's filter pass took 1.4-1.6 s on a cold worker, 0.5 s on the warm
    one)."""
    if _warming is not None:
        _warming.join()


def _warm_workers(warm_up: Callable[..., object], args: tuple, at_most: Callable[[], int | None] | None) -> None:
    """warm_up(*args) once per CPU of the cluster, at_most() times at most (asked here, in the background:
    planning remote inputs takes requests); a failure is the pass's to report."""
    import ray

    with contextlib.suppress(Exception):
        workers = int(ray.cluster_resources().get("CPU", 1))
        limit = at_most() if at_most else None
        for _ in fan_out(warm_up, [args] * max(1, min(workers, limit or workers))):
            pass


def _start_prefects_own_server() -> None:
    from prefect.server.api.server import SubprocessASGIServer

    with contextlib.suppress(Exception):
        SubprocessASGIServer().start()


class TemporaryPrefectServer:
    """The temporary API server Prefect starts for a flow when no server is configured (Prefect's
    SubprocessASGIServer: the same uvicorn command, environment and SQLite database under PREFECT_HOME), but
    started without importing Prefect's server modules in this process, which costs Prefect's own start 2 s
    of this process's time before the subprocess is even launched. Stopped when this process exits."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process = process
        self.api_url = f"http://127.0.0.1:{port}/api"
        atexit.register(self.stop)

    @classmethod
    def spawn(cls) -> TemporaryPrefectServer:
        import importlib.util
        import socket

        with socket.socket() as probe:  # a free port (Prefect's own picks a random one and checks it too)
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        site = Path(importlib.util.find_spec("prefect").origin).parents[1]
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        command = [sys.executable, "-m", "uvicorn", "--app-dir", str(site), "--factory",
                   "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
                   "--log-level", "error", "--lifespan", "on"]
        return cls(subprocess.Popen(command, env=env), port)

    def wait(self) -> bool:
        """Whether the server answers within Prefect's start-up timeout."""
        import urllib.request

        from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

        deadline = time.monotonic() + PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """Prefect's own stop: terminate, then kill after 5 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


RAY_STARTUP_NOISE = ("Set ray log level from environment variable", "Failed to get cluster ID from GCS server")


@contextlib.contextmanager
def _without_ray_startup_notice() -> Iterator[None]:
    """Ray's C++ logger announces "Set ray log level from environment variable" on the process's stderr
    (file descriptor 2, below Python) while the core worker starts, whatever the level it sets, and its GCS
    client logs every retry of a connection that fails (one line a second for about 20 s; ray.init's error
    then says it failed): catch what fd 2 gets during ray.init and pass on every other line."""
    import sys
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            for line in caught.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in RAY_STARTUP_NOISE):
                    sys.stderr.write(line)


class UnitsFailed(RuntimeError):
    """Units of a stage failed on transient errors; they are not marked done, so a rerun retries them."""

    def __init__(self, stage: str, failed: dict[str, str], done: int, total: int) -> None:
        lines = [f"stage {stage}: {len(failed)} of {total} units failed on transient errors (network, throttling "
                 f"or credentials) and are not marked done ({done} done); fix the cause and rerun the same "
                 "command to retry them:"]
        lines += [f"  {error}" for error in failed.values()]
        super().__init__("\n".join(lines))
        self.failed = failed


class StagedChain:
    """Consecutive stages' operators run on each batch in one pass (a fused pass): a stage's survivors go on to
    the next stage, its drops to that stage's own `dropped/<stage>` (so `dropped` and the funnel read as if
    each stage had run alone), and only the last stage's survivors are written, unless `copies` (every
    stage's survivors under `shards/<stage>`, as a stage-by-stage run writes them)."""

    def __init__(self, stages: Sequence[tuple[str, Sequence[Operator]]], copies: bool = False) -> None:
        self.stages = [(stage, OperatorChain(list(operators))) for stage, operators in stages]
        self.copies = copies

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(stage for stage, _ in self.stages)

    def reset(self) -> None:
        """Count the next unit apart (operators built once per process serve many units)."""
        for _, chain in self.stages:
            for operator in chain.operators:
                operator.stats = StageStats()

    def write(self, batch: pa.Table, writer: ShardWriter) -> None:
        last = len(self.stages) - 1
        for i, (stage, chain) in enumerate(self.stages):
            batch, dropped = chain(batch)
            writer.for_stage(stage).write(batch if i == last or self.copies else None, dropped)

    def stats(self) -> dict[str, StageStats]:
        return {name: stats for _, chain in self.stages for name, stats in chain.stats().items()}


class ShardWorker:
    """A unit that is an upstream shard, through the StagedChain `chain_for(rank)` makes for it."""

    batch_rows = 4096

    def __init__(self, chain_for: Callable[[int], StagedChain]):
        self.chain_for = chain_for

    def __call__(self, rank: int, path: str, writer: ShardWriter) -> dict[str, StageStats]:
        import pyarrow.parquet as pq

        chain = self.chain_for(rank)
        chain.reset()
        for batch in pq.ParquetFile(path).iter_batches(batch_size=self.batch_rows):
            chain.write(pa.Table.from_batches([batch]), writer)
        return chain.stats()


def split_records(records: list[dict], operators: Callable[[list[str]], list[str]]) -> list[dict]:
    """The records of one stage of a fused pass: each unit's record with only the operators `operators` picks
    (from the unit's operator names, in order), and as its seconds those operators' seconds."""
    split = []
    for record in records:
        names = operators(list(record["operators"]))
        ops = {name: record["operators"][name] for name in names}
        split.append({**record, "operators": ops, "seconds": round(sum(s["seconds"] for s in ops.values()), 4)})
    return split


_WORKER: tuple[str, UnitWorker] | None = None  # this process's worker: (its key, the worker)


def _cached_worker(key: str, make_worker: Callable[[], UnitWorker]) -> UnitWorker:
    """The worker for `key`, built once per process: Ray reuses its worker processes across tasks and stages,
    so a model loads once per process and a stage's start-up is one task, not an actor pool. Only the latest
    worker is kept, so a finished stage's models are freed."""
    global _WORKER
    if _WORKER is None or _WORKER[0] != key:
        _WORKER = None
        _WORKER = (key, make_worker())
    return _WORKER[1]


def _run_unit(stages: tuple[str, ...], out_dir: str, key: str, make_worker: Callable[[], UnitWorker],
              keep_dropped_text: bool, rank: int, path: str) -> dict:
    """One unit as a Ray task: its shards, then its completion record (or a `failed` record, writing nothing).
    `stages`: the stage whose record this is, last, after the other stages a fused pass writes too."""
    worker = _cached_worker(key, make_worker)
    start = time.perf_counter()
    for stage in stages:
        discard_partial_unit(out_dir, stage, rank)
    writer = ShardWriter(out_dir, stages[-1], rank, keep_dropped_text=keep_dropped_text)
    try:
        stats = worker(rank, path, writer)
    except TransientInputError as error:  # the environment's fault: leave the unit pending
        for stage in stages:
            discard_partial_unit(out_dir, stage, rank)
        return {"rank": rank, "input": path, "failed": str(error)}
    record = {
        "rank": rank,
        "input": path,
        "files": writer.close(),
        "rows": writer.rows,
        "operators": {name: s.to_dict() for name, s in stats.items()},
        "seconds": round(time.perf_counter() - start, 4),
        "finished": now(),
    }
    mark_unit_done(out_dir, stages[-1], rank, record)
    return record


def run_stage(stage: str, units: list[str], out_dir: str | Path, make_worker: Callable[[], UnitWorker], *,
              also: Sequence[str] = (), num_cpus: float = 1.0, num_gpus: float = 0.0, max_parallel: int | None = None,
              keep_dropped_text: bool = True, progress: bool = True) -> list[dict]:
    """Run `make_worker()` over every unit not yet completed, one Ray task per unit (at most `max_parallel` at
    once, else as many as the cluster's resources allow); return all units' completion records. (Which
    completed units may be kept is start_stage's decision, made before.)

    `also`: earlier stages the worker runs in the same pass (a fused pass: `writer.for_stage(name)` writes
    their drops, or copies); a unit's files in their folders go with it when it is retried, and its record,
    under `stage`, says the whole pass is done.

    Tasks, not a Ray Data actor pool: the units are names of files, not blocks of documents, so there is
    nothing to stream; tasks reuse Ray's warm worker processes (imports paid once per run, not per stage)
    and each process builds the stage's worker once (`_cached_worker`).
    """
    from ray import cloudpickle

    out_dir = str(Path(out_dir).resolve())
    done = completed_units(out_dir, stage)
    pending = [(rank, path) for rank, path in enumerate(units) if rank not in done]
    if pending:
        init_ray()
        _wait_for_warm_up()
        key = hashlib.sha256(cloudpickle.dumps((stage, make_worker))).hexdigest()
        worker_ref = make_worker if in_process() else _put(make_worker)
        calls = [((*also, stage), out_dir, key, worker_ref, keep_dropped_text, rank, str(path))
                 for rank, path in pending]
        bar = tqdm(total=len(units), initial=len(done), desc=stage, unit="unit", disable=not progress)
        failed = {}
        for _, record in fan_out(_run_unit, calls, num_cpus=num_cpus, num_gpus=num_gpus, limit=max_parallel):
            if "failed" in record:
                failed[record["input"]] = record["failed"]
                continue
            done[record["rank"]] = record
            bar.update(1)
        bar.close()
        if failed:
            raise UnitsFailed(stage, failed, len(done), len(units))
    return [done[rank] for rank in sorted(done)]


def in_process() -> bool:
    """MIXFORGE_IN_PROCESS=1: every task runs here, in order, without Ray (a debugger sees the workers; the
    engine benchmark measures Ray's own overhead against it). Same outputs, one core."""
    return os.environ.get("MIXFORGE_IN_PROCESS", "") not in ("", "0")


def cluster_gpus() -> int:
    """GPUs of the cluster the engine runs on (none in process)."""
    if in_process():
        return 0
    import ray

    init_ray()
    return int(ray.cluster_resources().get("GPU", 0))


def _put(value: object) -> object:
    import ray

    return ray.put(value)


def fingerprint(*parts: object) -> str:
    """A short digest of a stage's inputs and settings: equal digests mean its outputs can be kept."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def start_stage(out_dir: Path, stage: str, parts: dict | str, outputs: list[Path], restart: bool = False) -> None:
    """The one resume policy, for stages that check before `run_stage` (or keep state of their own): keep
    the stage's completed units if made with these parts (name -> inputs, config, code...; a bare digest is
    one part), else RunMismatch naming what differs, or with `restart` clear its records and `outputs`."""
    keep_or_restart(out_dir, stage, parts if isinstance(parts, dict) else {"settings": parts}, outputs, restart)


def fan_out(fn: Callable[..., Any], calls: Sequence[tuple], num_cpus: float = 1.0, num_gpus: float = 0.0,
            limit: int | None = None) -> Iterator[tuple[int, Any]]:
    """Run fn(*call) for every call as a Ray task (retried on worker failure), at most `limit` at once;
    yield (call index, result) as each finishes. The one helper for task fan-out: joins the session's Ray
    through init_ray."""
    if not calls:
        return
    if in_process():
        for i, call in enumerate(calls):
            yield i, fn(*call)
        return
    import ray

    init_ray()
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_retries=2)(fn)
    queue = iter(enumerate(calls))
    refs: dict[Any, int] = {}

    def submit() -> None:
        for i, call in queue:
            refs[remote.remote(*call)] = i
            return

    for _ in range(limit or len(calls)):
        submit()
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        index = refs.pop(ready[0])
        result = ray.get(ready[0])
        submit()
        yield index, result


def record_stage(manifest: Manifest, stage: str, units: list[str], records: list[dict]) -> None:
    """Fold the units' completion records into the manifest's entry for the stage."""
    entry = manifest.stage(stage)
    per_operator: dict[str, StageStats] = {}
    total = StageStats()
    for record in records:
        chain = [StageStats.from_dict(stats) for stats in record["operators"].values()]
        total.merge(StageStats.from_dict(stage_counts(chain)))
        for name, stats in zip(record["operators"], chain, strict=True):
            per_operator.setdefault(name, StageStats()).merge(stats)
    entry.operators = {name: stats.to_dict() for name, stats in per_operator.items()}
    entry.counts = total.to_dict()
    entry.units = len(units)
    entry.units_done = len(records)
    entry.seconds = round(sum(r["seconds"] for r in records), 3)
    entry.status = "complete" if len(records) == len(units) else "running"
    entry.finished = now() if entry.status == "complete" else None


def stage_counts(chain: list[StageStats]) -> dict[str, Any]:
    """One unit's funnel through its operator chain: what entered the first step, what left the last,
    and every step's drops. (Units are summed after this, since different units may use different
    operators, e.g. one reader per input format.)"""
    if not chain:
        return StageStats().to_dict()
    total = StageStats(docs_in=chain[0].docs_in, chars_in=chain[0].chars_in, tokens_in=chain[0].tokens_in,
                       docs_out=chain[-1].docs_out, chars_out=chain[-1].chars_out,
                       tokens_out=chain[-1].tokens_out)
    for stats in chain:
        total.dropped.update(stats.dropped)
        total.skipped.update(stats.skipped)
        total.quarantined += stats.quarantined
        total.duplicate_ids += stats.duplicate_ids
        total.seconds += stats.seconds
    return total.to_dict()
