"""Batches of documents through one model on Ray actors: one actor per GPU with `num_gpus=1` where the
cluster has GPUs, else one CPU actor. The worker object travels to the actors and loads its model there,
once per actor (its `__getstate__` leaves the loaded model behind)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def gpus_available() -> int:
    """GPUs of the Ray cluster this process is connected to (0 when not connected: nothing calls ray.init
    here; flows.engine.init_ray does)."""
    import ray

    return int(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0


class BatchActor:
    """One worker on one Ray worker process: `call(method, batch)` runs `worker.<method>(batch)`."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def call(self, method: str, batch: Any) -> Any:
        return getattr(self.worker, method)(batch)


def run_batches(worker: Any, method: str, batches: Sequence[Any], use_ray: bool) -> list[Any]:
    """`worker.<method>(batch)` for every batch, in order: here, or spread over Ray actors."""
    if not use_ray:
        return [getattr(worker, method)(batch) for batch in batches]
    import ray
    from ray.util import ActorPool

    gpus = gpus_available()
    remote = ray.remote(num_gpus=1, num_cpus=0)(BatchActor) if gpus else ray.remote(num_cpus=1)(BatchActor)
    actors = [remote.remote(worker) for _ in range(max(1, gpus))]
    try:
        return list(ActorPool(actors).map(lambda actor, batch: actor.call.remote(method, batch), batches))
    finally:
        for actor in actors:
            ray.kill(actor)
