"""Worker processes: the cores this process may use, and processes started safely from a
process that runs threads (ingest's parsers, exploration's MD runs, local labelling)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager


def usable_cores() -> int:
    """The cores this process may run on (its affinity on Linux), at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` processes that die with this one (a killed ingest leaves none behind).

    They are never forked from this process, which runs threads (Arrow's, BLAS's): a fork
    copies whatever lock another thread holds at that moment, held for good, and the child
    can deadlock on it. On Linux a fork server (a fresh single-threaded interpreter started
    on first use, one per process) forks them; elsewhere they are spawned. Either way they
    import mlipstore afresh and the caller's ``__main__`` is not run again in them (scripts
    need no main guard): they run mlipstore's functions only."""
    return ProcessPoolExecutor(workers, mp_context=worker_context(),
                               initializer=_die_with_parent)


def worker_context() -> mp.context.BaseContext:
    """The multiprocessing context mlipstore starts its worker processes with (see
    ``worker_pool``)."""
    return _WorkerContext()


_BaseContext = type(mp.get_context("forkserver" if sys.platform == "linux" else "spawn"))
_MAIN_LOCK = threading.Lock()


@contextmanager
def _main_unseen() -> Iterator[None]:
    """Hide the caller's script from multiprocessing while it starts a worker: otherwise it
    tells the worker to run the script (or ``-m`` module) again, as ``__mp_main__``, and a
    script without a main guard would run everything before its ingest call there (and
    start another ingest). Only ``__main__``'s ``__spec__`` and ``__file__`` change, for
    the few milliseconds of the start."""
    with _MAIN_LOCK:
        main = vars(sys.modules["__main__"])
        saved = {name: main[name] for name in ("__spec__", "__file__") if name in main}
        main.pop("__file__", None)
        main["__spec__"] = None
        try:
            yield
        finally:
            main.pop("__spec__", None)
            main.update(saved)


class _WorkerProcess(_BaseContext.Process):
    def start(self) -> None:
        with _main_unseen():
            super().start()


class _WorkerContext(_BaseContext):
    Process = _WorkerProcess


def _die_with_parent() -> None:
    """Worker initializer: exit as soon as the process that started the pool is gone (its
    end of a pipe closes, however it died). The worker's own parent is the fork server,
    so PR_SET_PDEATHSIG would not do."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="mlipstore-parent-watch", daemon=True).start()
