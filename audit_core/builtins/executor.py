"""The default executor: batches run one after another in this process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..executors import BatchResult, Executor, Job, WorkBatch, build_local, execute_batch
from ..hookspecs import hookimpl


class InProcessExecutor(Executor):
    name = "inprocess"

    def run(self, job: Job, batches: Iterable[WorkBatch]) -> Iterator[BatchResult]:
        target, attack = job.local if job.local is not None else build_local(job)
        ctx = job.attack_context
        for batch in batches:
            yield execute_batch(target, attack, batch, ctx["run_seed"], ctx["seed_key"], job.keep_maps)


@hookimpl
def register_executors(register):
    register(InProcessExecutor)
