"""``RayExecutor``: image batches go to Ray actors, each of which loads the target once.

Selected in audit.yaml with::

    run:
      executor: {plugin: ray, workers: 2}            # a local Ray instance
      executor: {plugin: ray, address: auto}         # join the running cluster (`ray start ...`)
      executor: {plugin: ray, address: "ray://head:10001", workers: 8, gpus_per_worker: 1}

The driver keeps the run store: results stream back batch by batch and the runner commits them
as they arrive, so ``--resume`` and the query cache work exactly as in-process. Scores are
identical whatever the number of workers, because every random draw is seeded per image.
A worker that dies is restarted by Ray and its batch is retried (``max_task_retries``); a batch
that still fails is resubmitted to another worker up to ``max_resubmits`` times, and every retry is
reported in results.json (``run.executor``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import Field

from audit_core import ConfigError, BatchResult, Executor, ExecutorParams, Job, WorkBatch


class RayParams(ExecutorParams):
    address: str | None = Field(None, description="None: start a local Ray; 'auto': join a cluster; 'ray://host:port': Ray Client")
    workers: int = Field(2, ge=1, description="number of actors (each loads the target once)")
    gpus_per_worker: float = Field(0.0, ge=0)
    cpus_per_worker: float = Field(1.0, gt=0)
    in_flight_per_worker: int = Field(2, ge=1, description="batches queued per actor")
    max_task_retries: int = Field(2, ge=0, description="Ray's own retries of a batch on a restarted actor")
    max_resubmits: int = Field(3, ge=0, description="further resubmissions of a failed batch to another actor")
    torch_threads: int | None = Field(
        None, ge=1, description="torch threads per actor (default: the driver's, so CPU scores are bit-identical)"
    )


class _Worker:
    """A Ray actor: builds the target and the attack once, then scores batches."""

    def __init__(self, job: Job, torch_threads: int):
        import torch

        from audit_core import build_local

        torch.set_num_threads(torch_threads)
        self.job = job
        self.target, self.attack = build_local(job)

    def pid(self) -> int:
        return os.getpid()

    def score(self, batch: WorkBatch) -> BatchResult:
        from audit_core import execute_batch

        ctx = self.job.attack_context
        return execute_batch(self.target, self.attack, batch, ctx["run_seed"], ctx["seed_key"], self.job.keep_maps)


class RayExecutor(Executor):
    name = "ray"
    Params = RayParams

    def __init__(self, params: RayParams):
        super().__init__(params)
        self.actors: list[Any] = []
        self.retried: int = 0
        self.failures: list[str] = []
        self._started_ray = False

    def _init_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "include_dashboard": False, "log_to_driver": False}
        if self.params.address is None:
            kwargs["num_cpus"] = max(int(self.params.workers * self.params.cpus_per_worker), os.cpu_count() or 1)
        else:
            kwargs["address"] = self.params.address
        # workers import the same packages as the driver (editable installs included)
        try:
            ray.init(**kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            raise ConfigError(f"run.executor.address: cannot reach Ray at {self.params.address!r}: {exc}") from None
        self._started_ray = self.params.address is None

    def run(self, job: Job, batches: Iterable[WorkBatch]) -> Iterator[BatchResult]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        self._init_ray()
        p = self.params
        import torch

        # CPU kernels split reductions by thread count: the driver's count keeps scores bit-identical
        threads = p.torch_threads or torch.get_num_threads()
        Actor = ray.remote(_Worker).options(
            num_cpus=p.cpus_per_worker,
            num_gpus=p.gpus_per_worker,
            max_restarts=-1,
            max_task_retries=p.max_task_retries,
        )
        job_ref = ray.put(job)
        self.actors = [Actor.remote(job_ref, threads) for _ in range(p.workers)]
        pending: dict[Any, tuple[WorkBatch, int, int]] = {}  # ref -> (batch, actor index, attempts)
        source = iter(batches)
        next_actor = 0
        exhausted = False

        def submit(batch: WorkBatch, attempts: int) -> None:
            nonlocal next_actor
            idx = next_actor % len(self.actors)
            next_actor += 1
            pending[self.actors[idx].score.remote(batch)] = (batch, idx, attempts)

        try:
            while True:
                while not exhausted and len(pending) < p.workers * p.in_flight_per_worker:
                    try:
                        submit(next(source), 0)
                    except StopIteration:
                        exhausted = True
                if not pending:
                    break
                done, _ = ray.wait(list(pending), num_returns=1)
                ref = done[0]
                batch, _, attempts = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except RayTaskError as exc:  # the attack itself raised: deterministic, do not retry
                    cause = getattr(exc, "cause", None)
                    raise (cause if isinstance(cause, BaseException) else exc) from None
                except RayActorError as exc:  # the worker died (after Ray's own retries)
                    self.retried += 1
                    self.failures.append(f"batch {batch.index}: {type(exc).__name__}")
                    if attempts >= p.max_resubmits:
                        raise RuntimeError(
                            f"batch {batch.index} failed on {attempts + 1} workers; last error: {exc}"
                        ) from None
                    submit(batch, attempts + 1)
                    continue
                yield result
        finally:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []

    def worker_pids(self) -> list[int]:
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["retried_batches"] = self.retried
        if self.failures:
            out["failures"] = self.failures[:50]
        return out

    def close(self) -> None:
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False
