"""Ingest: DFT output files -> validated, deduplicated configurations -> one transaction.

Files are read as tasks: a plain extxyz file in chunks of FRAMES_PER_TASK frames, any
other file whole. Large inputs are parsed by one worker process per core, the rest in
this process; either way the results are taken in input order, deduplicated and written
in row groups, with at most two tasks per worker in flight, so memory does not grow with
the input size. Every rejected frame or file is reported with its reason; the valid ones
of the call are committed in one atomic step (nothing at all with ``strict``).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
from tqdm import tqdm

from .._io import file_sha256
from .._workers import usable_cores, worker_pool
from ..store.codec import Source, configs_to_batch, schema
from ..store.configuration import STANDARD_KEYS, Configuration, KeyMap
from ..store.method import Method
from ..store.shards import ROW_GROUP_ROWS
from ..store.store import Store, StoreError, Transaction
from .formats import (
    INPUT_FORMATS,
    Chunk,
    FileError,
    detect_format,
    iread_chunk,
    plan,
    stated_method,
)


@dataclass
class Rejection:
    """Why a file, or one frame of it, was not stored."""

    path: str
    frame: int | None
    reason: str
    cut: bool = False  # the step a run was cut in: expected, does not fail the ingest

    def __str__(self) -> str:
        where = self.path if self.frame is None else f"{self.path}: frame {self.frame}"
        return f"{where}: {self.reason}"


@dataclass
class IngestReport:
    """What one ingest call did."""

    new: int = 0
    duplicate: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    files: int = 0
    skipped: list[str] = field(default_factory=list)  # directory entries not in INPUT_FORMATS
    already_ingested: int = 0  # files skipped because their sha256 is in skip_sources
    shards: list[str] = field(default_factory=list)
    committed: bool = False

    @property
    def ok(self) -> bool:
        """Nothing was rejected except the cut last steps of interrupted runs."""
        return all(r.cut for r in self.rejected)

    def rejection_lines(self, per_file: int = 3) -> list[str]:
        """Rejections for people: runs of frames with the same reason are folded."""
        groups: dict[tuple[str, str], list[int | None]] = {}
        for r in self.rejected:
            groups.setdefault((r.path, r.reason), []).append(r.frame)
        lines = []
        for (path, reason), frames in groups.items():
            if frames == [None]:
                lines.append(f"{path}: {reason}")
            elif len(frames) <= per_file:
                lines += [f"{path}: frame {f}: {reason}" for f in frames]
            else:
                lines.append(f"{path}: {len(frames)} frames ({frames[0]}..{frames[-1]}): "
                             f"{reason}")
        return lines

    def summary(self) -> str:
        state = "committed" if self.committed else "nothing committed"
        cut = sum(r.cut for r in self.rejected)
        cut_note = f" ({cut} the cut step of an interrupted run)" if cut else ""
        return (f"{self.new} new, {self.duplicate} duplicate, {len(self.rejected)} rejected"
                f"{cut_note} from {self.files} file(s); {state}")


def _display_path(path: Path) -> str:
    """The path as stored: relative to the working directory when inside it."""
    if path.is_absolute() and path.is_relative_to(Path.cwd()):
        path = path.relative_to(Path.cwd())
    return path.as_posix()


def discover(paths: Iterable[str | Path], format: str | None, report: IngestReport
             ) -> list[tuple[Path, str | None]]:
    """Expand directories (recursively, sorted, hidden entries and symlinked dirs skipped).

    Files named explicitly are always tried; files found in a directory are taken only
    when their format carries DFT labels, so POSCARs, INCARs or notes are skipped.
    """
    found: list[tuple[Path, str | None]] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            report.rejected.append(Rejection(str(path), None, "no such file or directory"))
        elif path.is_dir():
            for dirpath, dirnames, filenames in os.walk(path):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    child = Path(dirpath) / name
                    if name.startswith(".") or not child.is_file():
                        continue
                    try:
                        fmt = format or detect_format(child)
                    except FileError:
                        fmt = None
                    if fmt in INPUT_FORMATS:
                        found.append((child, fmt))
                    else:
                        report.skipped.append(str(child))
        else:
            found.append((path, format))
    return found


KeyMapChoice = KeyMap | Callable[[Path], KeyMap]
TagsChoice = Sequence[str] | Callable[[Path], Sequence[str]]
MethodChoice = Method | None | Callable[[Path], Method | None]

FRAMES_PER_TASK = 2048  # frames of a plain extxyz file parsed as one task
# below this, starting worker processes (a fork server, each importing mlipstore: ~0.8 s)
# costs more than it saves: on 2 cores 69 MB of extxyz took 3.0 s with 1 process and 3.3 s
# with 2, 690 MB 25 s and 16 s
PARALLEL_MIN_BYTES = 128 << 20


@dataclass(frozen=True)
class ReadTask:
    """One chunk of one input file, with everything a worker process needs to parse it."""

    file_no: int
    path: Path
    shown: str  # the path as stored and reported
    digest: str
    fmt: str
    chunk: Chunk
    key_map: KeyMap
    method: Method | None  # the file's, gaps filled from the user's
    tags: tuple[str, ...]
    trust_pickle: bool
    ingested_at: datetime
    nbytes: int  # bytes of the file this chunk spans (for progress)


@dataclass
class Parsed:
    """Rows parsed from (part of) a task, and what was rejected on the way."""

    batch: pa.RecordBatch | None
    rejected: list[Rejection]
    ends_file: bool = False  # nothing after this in the file may be stored


def read_task(task: ReadTask) -> Iterator[Parsed]:
    """Parse a task's frames into Arrow batches of at most ROW_GROUP_ROWS rows."""
    configs: list[Configuration] = []
    sources: list[Source] = []
    rejected: list[Rejection] = []
    ends_file = False
    try:
        for frame in iread_chunk(task.path, task.fmt, task.chunk, task.key_map,
                                 task.trust_pickle, task.method):
            if frame.error is not None:
                rejected.append(Rejection(task.shown, frame.index, frame.error, frame.cut))
                ends_file = frame.ends_file
                continue
            configs.append(frame.config)
            sources.append(Source(task.shown, task.digest, frame.index, task.fmt, task.tags,
                                  frame.run_finished))
            if len(configs) >= ROW_GROUP_ROWS:
                yield Parsed(configs_to_batch(configs, sources, task.ingested_at), rejected)
                configs, sources, rejected = [], [], []
    except FileError as err:
        rejected.append(Rejection(task.shown, None, str(err)))
        ends_file = True
    except OSError as err:
        rejected.append(Rejection(task.shown, None, f"cannot read: {err}"))
        ends_file = True
    batch = configs_to_batch(configs, sources, task.ingested_at) if configs else None
    yield Parsed(batch, rejected, ends_file)


def _read_task_whole(task: ReadTask) -> list[Parsed]:
    """All parts of a task at once: what a worker process sends back."""
    return list(read_task(task))


def _tasks(files: Sequence[tuple[Path, str | None]], key_map: KeyMapChoice, tags: TagsChoice,
           method: MethodChoice, trust_pickle: bool, require_finished: bool,
           skip_sources: Collection[str], report: IngestReport, ingested_at: datetime
           ) -> Iterator[ReadTask]:
    """The read tasks of each file, after the whole-file checks (failures go to report)."""
    for file_no, (path, fmt) in enumerate(files):
        shown = _display_path(path)
        try:
            digest = file_sha256(path)
        except OSError as err:
            report.files += 1
            report.rejected.append(Rejection(shown, None, f"cannot read: {err}"))
            continue
        if digest in skip_sources:
            report.already_ingested += 1
            continue
        report.files += 1
        try:
            fmt = fmt or detect_format(path)
            chunks = plan(path, fmt, FRAMES_PER_TASK, require_finished)
            ends = [chunk.offset for chunk in chunks[1:]] + [path.stat().st_size]
            file_method = stated_method(path, fmt, method(path) if callable(method)
                                        else method)
        except FileError as err:
            report.rejected.append(Rejection(shown, None, str(err)))
            continue
        except OSError as err:
            report.rejected.append(Rejection(shown, None, f"cannot read: {err}"))
            continue
        file_key_map = key_map(path) if callable(key_map) else key_map
        file_tags = tuple(tags(path) if callable(tags) else tags)
        for chunk, end in zip(chunks, ends, strict=True):
            yield ReadTask(file_no, path, shown, digest, fmt, chunk, file_key_map, file_method,
                           file_tags, trust_pickle, ingested_at, end - chunk.offset)


def _run(tasks: Iterable[ReadTask], workers: int
         ) -> Iterator[tuple[ReadTask, Iterable[Parsed]]]:
    """Each task with its parsed parts, in task order: parsed here (streaming) or by
    ``workers`` processes, at most two tasks per worker in flight (a worker sends a task's
    parts at once: a chunk, or a whole file of a format that cannot be split)."""
    if workers <= 1:
        for task in tasks:
            yield task, read_task(task)
        return
    with worker_pool(workers) as pool:
        pending: deque = deque()
        try:
            for task in tasks:
                pending.append((task, pool.submit(_read_task_whole, task)))
                if len(pending) >= 2 * workers:
                    yield _result(*pending.popleft())
            while pending:
                yield _result(*pending.popleft())
        finally:
            for _, future in pending:
                future.cancel()


def _result(task: ReadTask, future: Future) -> tuple[ReadTask, list[Parsed]]:
    try:
        return task, future.result()
    except BrokenProcessPool as err:
        raise StoreError(f"a worker process died (killed, or out of memory?) while parsing "
                         f"{task.shown} or a file after it; nothing was committed; with "
                         "1 job (-j 1) ingest parses in its own process") from err


def default_workers(input_bytes: int) -> int:
    """All available cores when the input is large enough to pay for worker processes."""
    return usable_cores() if input_bytes >= PARALLEL_MIN_BYTES else 1


class _Appender:
    """Drops duplicates (of the store or earlier in the call) and writes the rest to the
    transaction in row groups of ROW_GROUP_ROWS rows."""

    def __init__(self, txn: Transaction, known: set[str], report: IngestReport) -> None:
        self.txn, self.known, self.report = txn, known, report
        self.pending: list[pa.RecordBatch] = []
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        keep = []
        for row, config_id in enumerate(batch.column("id").to_pylist()):
            if config_id not in self.known:
                self.known.add(config_id)
                keep.append(row)
        self.report.new += len(keep)
        self.report.duplicate += batch.num_rows - len(keep)
        if keep:
            self.pending.append(batch if len(keep) == batch.num_rows else batch.take(keep))
            self.rows += len(keep)
        if self.rows >= ROW_GROUP_ROWS:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write whole row groups (everything if ``final``); keep the rest pending."""
        table = pa.Table.from_batches(self.pending, schema=schema())
        rows = table.num_rows if final else table.num_rows - table.num_rows % ROW_GROUP_ROWS
        if rows:
            self.txn.write(table.slice(0, rows))
        rest = table.slice(rows)
        self.pending, self.rows = rest.to_batches(), rest.num_rows


def ingest(
    paths: Iterable[str | Path],
    store: Store,
    *,
    format: str | None = None,
    key_map: KeyMapChoice = STANDARD_KEYS,
    tags: TagsChoice = (),
    method: MethodChoice = None,
    trust_pickle: bool = False,
    require_finished: bool = False,
    strict: bool = False,
    skip_sources: Collection[str] = (),
    progress: bool = False,
    workers: int | None = None,
) -> IngestReport:
    """Read DFT outputs into ``store``; returns the report (check ``report.ok``).

    ``key_map``, ``tags`` and ``method`` (the DFT settings of files that do not state
    them, e.g. extxyz; for outputs that state some, the ones they lack) are fixed or
    functions of the file. The complete steps of a
    DFT run that was cut before its end are stored, marked ``run_finished`` false (the
    cut step is rejected, which does not fail the call); ``require_finished`` rejects such
    files whole. Files whose sha256 is in
    ``skip_sources`` are not read at all. Configurations already in the store, or seen
    earlier in this call, count as duplicates and are not written again. ``workers``
    processes parse in parallel (default: all cores for inputs of 128 MiB or more); the
    result is the same in any case.
    """
    report = IngestReport()
    now = datetime.now(timezone.utc)
    with store.writing():
        files = discover(paths, format, report)
        input_bytes = sum(path.stat().st_size for path, _ in files)
        workers = default_workers(input_bytes) if workers is None else workers
        # no tqdm object at all without progress: even a disabled one takes tqdm's
        # process-shared lock, which a killed process can leave held for its siblings
        bar = tqdm(total=input_bytes, desc="ingest", unit="B", unit_scale=True,
                   leave=False) if progress else None
        known = store.ids()
        with store.transaction() as txn:
            appender = _Appender(txn, known, report)
            tasks = _tasks(files, key_map, tags, method, trust_pickle, require_finished,
                           skip_sources, report, now)
            ended: set[int] = set()  # files whose parse error ended them
            for task, parts in _run(tasks, workers):
                if bar is not None:
                    bar.update(task.nbytes)
                if task.file_no in ended:
                    continue  # (parsed lazily here: not at all)
                for part in parts:
                    report.rejected += part.rejected
                    if part.batch is not None:
                        appender.add(part.batch)
                    if part.ends_file:
                        ended.add(task.file_no)
                if bar is not None:
                    bar.set_postfix_str(f"new={report.new:,} dup={report.duplicate:,} "
                                        f"rejected={len(report.rejected):,}")
            appender.flush(final=True)
            if bar is not None:
                bar.close()
            if strict and report.rejected:
                txn.abort()
                return report
            report.shards = [p.name for p in txn.commit()]
            report.committed = bool(report.shards)
    return report
