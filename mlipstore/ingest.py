"""Ingest: DFT output files -> validated, deduplicated configurations -> one transaction.

Frames stream through a bounded buffer, so memory does not grow with the input size.
Every rejected frame or file is reported with its reason; the valid ones of the call
are committed in one atomic step (nothing at all with ``strict``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from .configuration import Configuration, KeyMap
from .readers import DFT_FORMATS, FileError, detect_format, iread, sha256_file
from .shards import ROW_GROUP_ROWS, Source, configs_to_batch
from .store import Store


@dataclass
class Rejection:
    """Why a file, or one frame of it, was not stored."""

    path: str
    frame: int | None
    reason: str

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
    skipped: list[str] = field(default_factory=list)  # directory entries not in DFT_FORMATS
    already_ingested: int = 0  # files skipped because their sha256 is in skip_sources
    shards: list[str] = field(default_factory=list)
    committed: bool = False

    @property
    def ok(self) -> bool:
        return not self.rejected

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
        return (f"{self.new} new, {self.duplicate} duplicate, {len(self.rejected)} rejected "
                f"from {self.files} file(s); {state}")


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
                    if fmt in DFT_FORMATS:
                        found.append((child, fmt))
                    else:
                        report.skipped.append(str(child))
        else:
            found.append((path, format))
    return found


KeyMapChoice = KeyMap | Callable[[Path], KeyMap]
TagsChoice = Sequence[str] | Callable[[Path], Sequence[str]]


def _frames(files: Sequence[tuple[Path, str | None]], key_map: KeyMapChoice, tags: TagsChoice,
            trust_pickle: bool, skip_sources: Collection[str], report: IngestReport,
            progress: bool) -> Iterator[tuple[Configuration, Source]]:
    # no tqdm object at all without progress: even a disabled one takes tqdm's
    # process-shared lock, which a killed process can leave held for its siblings
    bar = tqdm(files, desc="ingest", unit="file", leave=False) if progress else None
    for path, fmt in bar if bar is not None else files:
        shown = _display_path(path)
        try:
            digest = sha256_file(path)
            if digest in skip_sources:
                report.already_ingested += 1
                continue
            report.files += 1
            fmt = fmt or detect_format(path)
            file_key_map = key_map(path) if callable(key_map) else key_map
            file_tags = tuple(tags(path) if callable(tags) else tags)
            for frame in iread(path, fmt, file_key_map, trust_pickle):
                if frame.error is not None:
                    report.rejected.append(Rejection(shown, frame.index, frame.error))
                    continue
                yield frame.config, Source(shown, digest, frame.index, fmt, file_tags)
        except FileError as err:
            report.rejected.append(Rejection(shown, None, str(err)))
        except OSError as err:
            report.files += 1
            report.rejected.append(Rejection(shown, None, f"cannot read: {err}"))
        if bar is not None:
            bar.set_postfix(new=report.new, dup=report.duplicate,
                            rejected=len(report.rejected))


def ingest(
    paths: Iterable[str | Path],
    store: Store,
    *,
    format: str | None = None,
    key_map: KeyMapChoice = KeyMap(),
    tags: TagsChoice = (),
    trust_pickle: bool = False,
    strict: bool = False,
    skip_sources: Collection[str] = (),
    progress: bool = False,
) -> IngestReport:
    """Read DFT outputs into ``store``; returns the report (check ``report.ok``).

    ``key_map`` and ``tags`` are fixed or functions of the file. Files whose sha256 is in
    ``skip_sources`` are not read at all. Configurations already in the store, or seen
    earlier in this call, count as duplicates and are not written again.
    """
    report = IngestReport()
    now = datetime.now(UTC)
    with store.writing():
        files = discover(paths, format, report)
        known = store.ids()
        with store.transaction() as txn:
            configs: list[Configuration] = []
            sources: list[Source] = []
            frames = _frames(files, key_map, tags, trust_pickle, skip_sources, report,
                             progress)
            for config, source in frames:
                if config.id in known:
                    report.duplicate += 1
                    continue
                known.add(config.id)
                report.new += 1
                configs.append(config)
                sources.append(source)
                if len(configs) >= ROW_GROUP_ROWS:
                    txn.write(configs_to_batch(configs, sources, now))
                    configs, sources = [], []
            if configs:
                txn.write(configs_to_batch(configs, sources, now))
            if strict and report.rejected:
                txn.abort()
                return report
            report.shards = [p.name for p in txn.commit()]
            report.committed = bool(report.shards)
    return report
