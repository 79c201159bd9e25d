"""A process pool whose tasks have a hard time limit: a worker that overruns is killed and replaced.

For checkers that can hang (math-verify's sympy work, guarded only by signal.alarm). Workers are
started with ``spawn`` so that no thread state is forked; ``fn`` must be a module-level function.

An item's clock starts when an idle, warmed-up worker receives it: a worker first runs ``warmup``
(imports, caches) and says it is ready, with a start-up allowance of its own. Before, the first
item of each worker also paid for the worker's start-up, and under CPU load every item of the first
batch timed out.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Outcome:
    """What happened to one item."""

    value: Any = None
    timed_out: bool = False
    error: str | None = None
    """``Type: message`` when ``fn`` raised, or a note when the worker died."""
    duration_s: float = 0.0


STARTUP_TIMEOUT_S = 120.0
"""How long a worker may take to start and warm up before it counts as dead."""


def _serve(fn: Callable[[Any], Any], warmup: Callable[[], Any] | None, connection) -> None:
    if warmup is not None:
        warmup()
    connection.send(("ready", None))
    while True:
        try:
            item = connection.recv()
        except EOFError:
            return
        try:
            connection.send(("ok", fn(item)))
        except Exception as exc:  # reported to the caller, the worker keeps serving
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class TimeoutPool:
    """``map`` items through ``fn`` on ``num_workers`` processes, each call limited to ``timeout_s``."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        num_workers: int,
        timeout_s: float,
        warmup: Callable[[], Any] | None = None,
    ):
        self.fn, self.warmup = fn, warmup
        self.timeout_s = timeout_s
        self.context = multiprocessing.get_context("spawn")
        self.workers = [self._start() for _ in range(max(1, num_workers))]
        self.warm = [False] * len(self.workers)
        self.lock = threading.Lock()

    def _start(self):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(self.fn, self.warmup, child), daemon=True)
        process.start()
        child.close()
        return process, parent

    @staticmethod
    def _ready(connection) -> bool:
        """Wait for a new worker's "ready" (once per worker): start-up is not an item's time."""
        try:
            return connection.poll(STARTUP_TIMEOUT_S) and connection.recv()[0] == "ready"
        except (EOFError, OSError):
            return False

    def map(self, items: list[Any]) -> list[Outcome]:
        with self.lock:  # one map at a time; each worker has its own driving thread
            todo: queue.Queue = queue.Queue()
            for index, item in enumerate(items):
                todo.put((index, item))
            results: list[Outcome | None] = [None] * len(items)
            threads = [
                threading.Thread(target=self._drive, args=(w, todo, results))
                for w in range(len(self.workers))
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            return results  # type: ignore[return-value]

    def _drive(self, slot: int, todo: queue.Queue, results: list) -> None:
        while True:
            try:
                index, item = todo.get_nowait()
            except queue.Empty:
                return
            process, connection = self.workers[slot]
            if not self.warm[slot]:
                self.warm[slot] = self._ready(connection)
            started = time.monotonic()
            try:
                if not self.warm[slot]:
                    raise EOFError("the worker did not start")
                connection.send(item)
                if connection.poll(self.timeout_s):
                    status, payload = connection.recv()
                    elapsed = time.monotonic() - started
                    results[index] = (
                        Outcome(payload, duration_s=elapsed)
                        if status == "ok"
                        else Outcome(error=payload, duration_s=elapsed)
                    )
                    continue
                results[index] = Outcome(timed_out=True, duration_s=time.monotonic() - started)
            except (EOFError, OSError, BrokenPipeError):
                results[index] = Outcome(error="worker died", duration_s=time.monotonic() - started)
            process.kill()  # overran or died: replace it
            process.join()
            connection.close()
            self.workers[slot] = self._start()
            self.warm[slot] = False

    def close(self) -> None:
        for process, connection in self.workers:
            connection.close()
            process.kill()
            process.join()
        self.workers = []
