"""``RemoteTarget``: what every variation-only target behind a network service shares, whatever
the service speaks (the ``http`` target's protocols here, the ``gradio`` plugin's app calls):

- jobs run on a thread pool, at most ``concurrency`` at once; the first failure cancels the jobs
  not yet started and propagates once the ones in flight have finished (:meth:`_run_jobs`);
- retries and their accounting live in ``self.calls`` (an :class:`~audit_http.client.Client` or a
  :class:`~audit_http.client.Retrier`): requests, retries, time spent waiting, failures by kind;
- returned images are validated and decoded (:meth:`_decode`: refused unless it has the model's size,
  converted when of another mode, with a note);
- seeds: :meth:`_note_seeds` records whether the service used the seeds it was sent, and
  :meth:`_no_seed` says (once, in the run's notes and on the terminal) that a service takes none,
  so its variations are not reproducible and a resumed run relies on the query cache.

A subclass sets ``image_size``, ``channels``, ``num_train_timesteps``, ``kind`` and ``calls`` in
``__init__`` and builds its jobs in ``_variations``: ``(fn, *args)`` with ``fn(*args) ->
(rows, [len(rows), C, S, S])``.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

import torch

from audit_core import VARIATION, Target, TargetContext


class RemoteTarget(Target):
    kind = "pixel"
    capabilities = frozenset({VARIATION})
    bounded_variations = True  # 8-bit images: every variation is already within [-1, 1]
    calls: Any = None  # Client or Retrier: requests, retries, waited_s, failures

    def __init__(self, params: Any, context: TargetContext | None = None):
        super().__init__(params, context)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self.seeds_honoured: bool | None = None
        self.seeds_checked = True  # whether the service reports the seeds it used
        self.resized = 0
        run_dtype = getattr(self.context, "dtype", "auto")
        # the service runs the model at its own precision
        self.precision = {"dtype": "remote", "reason": "the server's precision" + (f" (run.dtype {run_dtype} does not reach a remote model)" if run_dtype != "auto" else "")}

    # ----------------------------------------------------------------- seeds
    def _note_seeds(self, honoured: bool) -> None:
        with self._lock:
            if not honoured and self.seeds_honoured is not False:
                self.stats.notes.append("the endpoint did not use the seeds it was sent: its own randomness was used")
                self.seeds_honoured = False
            elif honoured and self.seeds_honoured is None:
                self.seeds_honoured = True

    def _no_seed(self, where: str) -> None:
        """The service takes no seed: say so once, in the run's notes and on the terminal."""
        from audit_core import warn

        msg = (
            f"{where} has no {{seed}}: the endpoint cannot take a seed, so its variations are not reproducible "
            f"and a resumed run relies on the query cache"
        )
        self.seeds_honoured = False
        self.stats.notes.append(msg)
        warn(msg)

    def seeds_text(self) -> str:
        if self.seeds_honoured is True:
            return "honoured: the endpoint used the per-image seeds (reproducible)"
        if self.seeds_honoured is False:
            return (
                "not honoured: the endpoint's own randomness was used (not reproducible; a resumed run relies on "
                "the query cache)"
            )
        if not self.seeds_checked and self.calls is not None and self.calls.requests > 0:
            return "sent: every request carried its seed; the service does not report the seed it used, so this is unchecked"
        return "unknown (no variation requested yet)"

    def describe_calls(self) -> dict[str, Any]:
        c = self.calls
        out = {
            "seeds": self.seeds_text(),
            "concurrency": self.params.concurrency,
            "requests": c.requests,
            "retries": c.retries,
            "retry_wait_s": round(c.waited_s, 3),
            "transient_failures": dict(c.failures),
        }
        if self.resized:
            out["resized_outputs"] = self.resized
        if self.stats.notes:
            out["notes"] = list(self.stats.notes)
        return out

    # ----------------------------------------------------------------- images
    def _decode(self, data: str) -> torch.Tensor:
        """A returned base64 image -> ``[C, S, S]`` (refused unless it has the model's size)."""
        from .target import from_png_b64

        x, changed = from_png_b64(data, self.channels, self.image_size, self.params.url)
        if changed:
            with self._lock:
                if not self.resized:
                    self.stats.notes.append(
                        f"the endpoint returned images of another mode; they were converted to "
                        f"{self.channels}x{self.image_size}x{self.image_size}"
                    )
                self.resized += 1
        return x

    def _decode_bytes(self, raw: bytes, what: str = "a request", ctype: str = "") -> torch.Tensor:
        import base64

        from .client import RemoteError

        if ctype.startswith("application/json") or ctype.startswith("text/"):
            raise RemoteError(f"{self.params.url} answered {what} with {ctype.split(';')[0]}, not an image")
        return self._decode(base64.b64encode(raw).decode("ascii"))

    # ----------------------------------------------------------------- running
    def nfe_per_query(self, t: int, k: int) -> int:
        return t // k if k > 0 else 0

    def max_batch(self) -> int:
        return 1 << 16  # the target splits work into requests itself

    def _run_jobs(self, jobs: list[tuple], rows: int) -> torch.Tensor:
        """Run ``(fn, *args)`` jobs, ``concurrency`` at a time -> ``[rows, C, S, S]``."""
        out = torch.empty((rows, self.channels, self.image_size, self.image_size), dtype=torch.float32)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.params.concurrency, thread_name_prefix=f"audit-{self.name}")
        futures = [self._pool.submit(fn, *args) for fn, *args in jobs]
        done, pending = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in done if f.exception() is not None]
        if failed:
            for f in pending:
                f.cancel()
            wait(pending)  # let requests in flight finish before the error propagates
            raise failed[0].exception()
        for f in futures:
            got_rows, values = f.result()
            out[got_rows] = values
        return out

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
