"""The store: a directory of immutable Parquet shards, appended to in atomic transactions.

Layout of ``data/store``::

    part-<txn>-0001of0001-<sha>.parquet     shards written by ingest (never rewritten)
    compact-<txn>-0001of0001-<sha>.parquet  a shard that replaces several small ones
    _lock                             held (flock) by the one writer at a time
    _staging/<txn>/                   shards of a transaction being written

Commit protocol: shards are written and fsynced in ``_staging/<txn>/``, a ``COMMITTING``
marker is written, then each shard is renamed into the store. Readers only see a
transaction once all its shards are in place. A writer that finds a staging directory
left by a killed process rolls it forward if it had reached ``COMMITTING`` and deletes
it otherwise, so every call ends exactly before or exactly after itself.
"""

from __future__ import annotations

import abc
import fcntl
import hashlib
import json
import os
import shutil
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ase
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .._io import atomic_write, file_sha256, fsync_dir
from ..errors import StoreError
from ..layout import Layout
from .codec import SCHEMA_VERSION, SchemaError, check_schema_version, conform, elements_of, schema
from .filters import ScanFilter
from .method import summarize
from .shards import DIGEST_CHARS, REPLACES_KEY, ROW_GROUP_ROWS, ShardName, new_txn, open_writer

DEFAULT_STORE = Layout().store  # data/store, relative to the working directory
SHARD_ROWS = 100_000  # ~10^7 configurations in ~10^2 shards; well under DVC's ~10^4 files
COMMIT_MARKER = "COMMITTING"


def _counts(values) -> dict[str, int]:
    """How often each value occurs (Arrow's value_counts), as a plain dict."""
    return {row["values"]: row["counts"] for row in pc.value_counts(values).to_pylist()}


def _true(mask) -> int:
    """How many entries of a boolean array are true."""
    return int(pc.sum(mask).as_py() or 0)


def _verify_shard(path: Path, name: ShardName, seen: set[str]) -> tuple[list[str], int]:
    """What is wrong with one shard (empty if nothing) and its row count; ``seen``
    collects ids across shards."""
    from .codec import Columns
    from .identity import config_id

    problems = []
    if file_sha256(path)[:DIGEST_CHARS] != name.digest:
        problems.append("its bytes do not match the checksum in its name (damaged or "
                        "modified after it was written)")
    try:
        check_schema_version(pq.read_schema(path).metadata, "schema")
        table = conform(pq.read_table(path, page_checksum_verification=True))
    except Exception as err:  # noqa: BLE001 - any decoding failure is the finding
        return [*problems, f"unreadable: {type(err).__name__}: {err}"], 0
    cols = Columns.from_table(table)
    fingerprints = table.column("method_fingerprint").to_pylist()
    wrong = 0
    for row, stored in enumerate(cols.ids):
        sl = cols.atoms_slice(row)
        stress = None if np.isnan(cols.stress[row, 0]) else cols.stress[row]
        energy, free, corrected = (None if np.isnan(v) else v for v in (
            cols.energy[row], cols.free_energy[row], cols.energy_corrected[row]))
        computed = config_id(cols.numbers[sl], cols.positions[sl], cols.cells[row],
                             cols.pbc[row], energy, free, cols.forces[sl], stress, corrected,
                             fingerprints[row])
        wrong += computed != stored
    if wrong:
        problems.append(f"{wrong} of {table.num_rows} rows do not match their content hash")
    duplicates = seen.intersection(cols.ids)
    if duplicates:
        problems.append(f"{len(duplicates)} configuration(s) also stored in another shard")
    seen.update(cols.ids)
    return problems, table.num_rows


def live_shards(names: list[str], replaced_by: dict[str, list[str]]) -> list[str]:
    """The shard names a reader sees: complete transactions only, minus the shards a
    committed compaction replaced (``replaced_by``: compact shard -> names it replaces)."""
    parsed = {n: ShardName.parse(n) for n in names}
    groups: dict[str, list[str]] = defaultdict(list)
    for name, shard in parsed.items():
        if shard is not None:
            groups[shard.txn].append(name)
    complete = [n for group in groups.values() if len(group) == parsed[group[0]].n
                for n in group]
    replaced = {old for n in complete for old in replaced_by.get(n, [])}
    return sorted(n for n in complete if n not in replaced)


class Transaction:
    """Shards written by one call; invisible to readers until ``commit``."""

    def __init__(self, store: Store, kind: str = "part", metadata: dict | None = None,
                 max_rows: int = SHARD_ROWS) -> None:
        self.store, self.kind, self.max_rows = store, kind, max_rows
        self.metadata = metadata or {}
        self.txn = new_txn()
        self.dir = store.staging / self.txn
        self.dir.mkdir(parents=True)
        self._staged: list[Path] = []
        self._writer: pq.ParquetWriter | None = None
        self._rows_in_shard = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        """Append rows, starting a new shard every ``max_rows`` rows."""
        start = 0
        while start < batch.num_rows:
            if self._writer is None or self._rows_in_shard >= self.max_rows:
                self._close_writer()
                path = self.dir / f"{len(self._staged):04d}.parquet"
                self._writer = open_writer(path, self.metadata)
                self._staged.append(path)
            take = min(batch.num_rows - start, self.max_rows - self._rows_in_shard)
            self._writer.write(batch.slice(start, take), row_group_size=ROW_GROUP_ROWS)
            self._rows_in_shard += take
            start += take

    def _close_writer(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._rows_in_shard = 0

    def commit(self) -> list[Path]:
        """Make all shards visible; returns their final paths (none if nothing written)."""
        self._close_writer()
        if not self._staged:
            self.abort()
            return []
        for path in self._staged:
            with open(path, "rb") as fh:
                os.fsync(fh.fileno())
        n = len(self._staged)
        targets = [self.store.root / str(ShardName(self.kind, self.txn, k + 1, n,
                                                   file_sha256(path)[:DIGEST_CHARS]))
                   for k, path in enumerate(self._staged)]
        # the marker appears whole or not at all: written aside, fsynced, then renamed (a
        # writer killed while writing it once left an empty marker, found by the kill test)
        with atomic_write(self.dir / COMMIT_MARKER) as fh:
            fh.write(json.dumps([t.name for t in targets]))
        _roll_forward(self.dir, self.store.root)
        return targets

    def abort(self) -> None:
        """Discard everything written; the store is as before."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        shutil.rmtree(self.dir, ignore_errors=True)
        _remove_if_empty(self.store.staging)


def _roll_forward(staging_dir: Path, root: Path) -> None:
    """Rename the staged shards of a transaction that reached COMMITTING into the store."""
    names = json.loads((staging_dir / COMMIT_MARKER).read_text())
    for k, name in enumerate(names):
        staged = staging_dir / f"{k:04d}.parquet"
        if staged.exists():
            os.replace(staged, root / name)
    fsync_dir(root)
    shutil.rmtree(staging_dir, ignore_errors=True)
    _remove_if_empty(staging_dir.parent)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


class StoreReader(abc.ABC):
    """What every version of a store can do: list its committed shards and read them.
    ``Store`` (a local directory, writable) and ``RevisionStore`` (a git revision read
    through DVC, read-only) say where the shards are."""

    arrow_fs = None  # pyarrow filesystem of the shards; None: the local one

    def close(self) -> None:  # noqa: B027 (a local store holds nothing)
        """Release what reading holds (the DVC repository behind a RevisionStore)."""

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    @abc.abstractmethod
    def label(self) -> str:
        """The store as named in messages and in ``info()``."""

    @abc.abstractmethod
    def _shard_names(self) -> list[str]:
        """File names of the shards (committed or not)."""

    @abc.abstractmethod
    def _shard_path(self, name: str):
        """Where the shard ``name`` is, for ``arrow_fs``."""

    @abc.abstractmethod
    def _shard_bytes(self, path) -> int:
        """Bytes of one shard."""

    def _shard_metadata(self, path) -> dict:
        return pq.read_schema(path, filesystem=self.arrow_fs).metadata or {}

    def shard_paths(self) -> list:
        """The committed shards, oldest first: complete transactions only, minus the shards
        a committed compaction replaced."""
        names = self._shard_names()
        replaced_by = {}
        for name in names:
            shard = ShardName.parse(name)
            if shard is not None and shard.kind == "compact":
                meta = self._shard_metadata(self._shard_path(name))
                replaced_by[name] = json.loads(meta.get(REPLACES_KEY, b"[]"))
        return [self._shard_path(n) for n in live_shards(names, replaced_by)]

    def schema_versions(self) -> dict[str, int]:
        """Each committed shard's schema version; StoreError for a shard this mlipstore
        cannot read (newer version, not a shard)."""
        versions = {}
        for path in self.shard_paths():
            try:
                versions[str(path)] = check_schema_version(self._shard_metadata(path),
                                                           f"{self.label}: {path}")
            except SchemaError as err:
                raise StoreError(str(err)) from None
        return versions

    def dataset(self) -> ds.Dataset:
        """A pyarrow Dataset over the committed shards, all read as the current schema
        version (columns added since a shard was written are null in it)."""
        return ds.dataset(list(self.schema_versions()), schema=schema(),
                          format="parquet", filesystem=self.arrow_fs)

    def scan(self, where: ScanFilter | None = None, columns: list[str] | None = None
             ) -> pa.Table:
        """Read configurations matching ``where``, filters pushed into Parquet."""
        where = where or ScanFilter()
        want = columns
        if columns is not None and where.tags and "tags" not in columns:
            want = [*columns, "tags"]
        # little read-ahead: the default (16 batches of 4 files) held 3 GB for a 650 MB
        # result on a 10^6-configuration store, and was no faster
        table = self.dataset().scanner(columns=want, filter=where.expression(),
                                       batch_readahead=2, fragment_readahead=1).to_table()
        table = where.apply_tags(table)
        if "run_finished" in table.column_names:  # null in version-1 shards: finished runs
            table = table.set_column(table.column_names.index("run_finished"), "run_finished",
                                     pc.fill_null(table.column("run_finished"), True))
        return table.select(columns) if columns is not None else table

    def to_pandas(self, where: ScanFilter | None = None, columns: list[str] | None = None):
        """``scan`` as a pandas DataFrame (per-atom columns hold nested lists)."""
        return self.scan(where, columns).to_pandas()

    def iter_atoms(self, where: ScanFilter | None = None) -> Iterator[ase.Atoms]:
        """Matching configurations as ``ase.Atoms`` with their DFT labels attached."""
        from .codec import table_to_configurations

        for config, row_id in table_to_configurations(self.scan(where)):
            atoms = config.to_atoms()
            atoms.info["mlipstore_id"] = row_id
            yield atoms

    def ids(self) -> set[str]:
        """All configuration ids in the store."""
        return set(self.dataset().to_table(columns=["id"]).column("id").to_pylist())

    def source_digests(self) -> set[str]:
        """sha256 of every source file that contributed a configuration."""
        column = self.dataset().to_table(columns=["source_sha256"]).column("source_sha256")
        return set(column.unique().to_pylist())

    def content_hash(self) -> str:
        """sha256 over the sorted configuration ids: equal stores have equal hashes."""
        digest = hashlib.sha256(b"mlipstore-content-v1")
        for config_id in sorted(self.ids()):
            digest.update(config_id.encode())
        return digest.hexdigest()

    def info(self) -> dict:
        """Summary counts: configurations, atoms, elements, shards, bytes on disk, and
        configurations per DFT method fingerprint with its settings."""
        versions = self.schema_versions()
        paths = self.shard_paths()
        table = self.scan(columns=["n_atoms", "chemical_system", "energy", "free_energy",
                                   "energy_corrected", "stress", "energy_weight",
                                   "forces_weight", "run_finished", "tags", "source_format",
                                   "method", "method_fingerprint"])

        def given(name: str) -> int:
            return table.num_rows - table.column(name).null_count

        return {
            "store": self.label,
            "n_configs": table.num_rows,
            "n_atoms": int(pc.sum(table.column("n_atoms")).as_py() or 0),
            "elements": elements_of(table),
            "n_shards": len(paths),
            "bytes": sum(self._shard_bytes(p) for p in paths),
            "schema_versions": {str(v): n for v, n in sorted(_counts(
                pa.array(list(versions.values()), pa.int64())).items())},
            "with_energy": given("energy"),
            "with_free_energy": given("free_energy"),
            "with_energy_corrected": given("energy_corrected"),
            "with_stress": given("stress"),
            "with_weights": _true(pc.or_(table.column("energy_weight").is_valid(),
                                         table.column("forces_weight").is_valid())),
            "from_unfinished_runs": _true(pc.invert(table.column("run_finished"))),
            "formats": _counts(table.column("source_format")),
            "chemical_systems": _counts(table.column("chemical_system")),
            "tags": _counts(pc.list_flatten(table.column("tags"))),
            "methods": summarize(table),
        }


class Store(StoreReader):
    """A directory of Parquet shards holding DFT configurations, read and appended to
    (see the module docs)."""

    def __init__(self, root: str | Path = DEFAULT_STORE, create: bool = False) -> None:
        self.root = Path(root)
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        elif not self.root.is_dir():
            raise StoreError(f"no store at {self.root} (create one with 'mlipstore ingest')")

    @property
    def staging(self) -> Path:
        return self.root / "_staging"

    @property
    def label(self) -> str:
        return str(self.root)

    def _shard_names(self) -> list[str]:
        return [p.name for p in self.root.glob("*.parquet")]

    def _shard_path(self, name: str):
        return self.root / name

    def _shard_bytes(self, path) -> int:
        return Path(path).stat().st_size

    # -- writing ---------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the store's write lock (one writer at a time) and recover a killed writer."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "_lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._recover()
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self, kind: str = "part", metadata: dict | None = None
                    ) -> Iterator[Transaction]:
        """A transaction; committed by the caller, aborted on any exception."""
        txn = Transaction(self, kind, metadata)
        try:
            yield txn
        except BaseException:
            txn.abort()
            raise
        finally:
            if txn.dir.exists() and not (txn.dir / COMMIT_MARKER).exists():
                txn.abort()

    def _recover(self) -> None:
        """Finish or undo what a killed writer left (call with the lock held)."""
        if self.staging.is_dir():
            for staging_dir in sorted(self.staging.iterdir()):
                if (staging_dir / COMMIT_MARKER).exists():
                    _roll_forward(staging_dir, self.root)
                else:
                    shutil.rmtree(staging_dir, ignore_errors=True)
            _remove_if_empty(self.staging)
        live = {p.name for p in self.shard_paths()}
        for path in self.root.glob("*.parquet"):
            name = ShardName.parse(path.name)
            if name is not None and path.name not in live:
                path.unlink()  # replaced by a committed compaction

    def verify(self) -> tuple[list[str], dict]:
        """Check every shard: its bytes against the checksum in its name, Parquet page
        checksums, a known schema version, and every row's id against its content.
        Returns the problems (empty if none) and counts of what was checked."""
        problems: list[str] = []
        live = set(self.shard_paths())
        seen: set[str] = set()
        counts = {"shards": 0, "configurations": 0, "incomplete": 0}
        for path in sorted(self.root.glob("*.parquet")):
            name = ShardName.parse(path.name)
            if name is None:
                problems.append(f"{path.name}: not a shard of this store (unknown name)")
                continue
            if path not in live:
                counts["incomplete"] += 1  # killed writer or compaction: next writer cleans
                continue
            counts["shards"] += 1
            found, rows = _verify_shard(path, name, seen)
            problems += [f"{path.name}: {p}" for p in found]
            counts["configurations"] += rows
        return problems, counts

    def migrate(self) -> tuple[list[Path], int]:
        """Rewrite the shards of older schema versions as the current version, in one
        transaction (the rewritten shards are replaced as by ``compact``); shards already
        current are not touched. Ids and values are unchanged. Returns the new shards and
        how many old ones they replace.

        Not needed to read or append: older shards are read as the current version. It
        gives every Arrow tool one schema, and lets pyarrow < 26 read a version-1 store."""
        with self.writing():
            old = [Path(p) for p, v in self.schema_versions().items() if v < SCHEMA_VERSION]
            if not old:
                return [], 0
            meta = {REPLACES_KEY: json.dumps([p.name for p in old]).encode()}
            with self.transaction("compact", meta) as txn:
                for path in old:
                    txn.write(conform(pq.read_table(path)))
                new = txn.commit()
            for path in old:
                path.unlink()
            return new, len(old)

    def compact(self, min_rows: int = SHARD_ROWS // 2) -> list[Path]:
        """Merge shards smaller than ``min_rows`` rows into as few shards as possible.

        Returns the new shard paths. The old shards are removed after the new ones are
        committed; the replaced names are recorded in the new shards' metadata, so a
        reader never sees a configuration twice, even if this call is killed midway.
        """
        with self.writing():
            small = [p for p in self.shard_paths() if pq.read_metadata(p).num_rows < min_rows]
            if len(small) < 2:
                return []
            meta = {REPLACES_KEY: json.dumps([p.name for p in small]).encode()}
            with self.transaction("compact", meta) as txn:
                for path in small:
                    for batch in pq.ParquetFile(path).iter_batches(batch_size=ROW_GROUP_ROWS):
                        txn.write(conform(pa.Table.from_batches([batch])))  # any version
                new = txn.commit()
            for path in small:
                path.unlink()
            return new
