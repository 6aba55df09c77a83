"""Immutable Parquet shards: naming, building Arrow batches in bulk, writing.

A shard is named ``<kind>-<txn>-<k>of<n>-<digest>.parquet``. ``txn`` identifies the call
that wrote it (UTC time + random suffix, so names sort by time and concurrent writers
never collide); a transaction is visible only once all ``n`` of its shards are in place.
``digest`` is the start of the sha256 of the file's bytes, so any change to a shard, a
single flipped byte included, is detectable (``Store.verify``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from ase.data import chemical_symbols

from .configuration import Configuration
from .schema import VEC3, schema

SHARD_RE = re.compile(
    r"^(?P<kind>part|compact)-(?P<txn>[0-9TZ]+-[0-9a-f]{8})-(?P<k>\d{4})of(?P<n>\d{4})"
    r"-(?P<digest>[0-9a-f]{16})\.parquet$"
)
DIGEST_CHARS = 16
ROW_GROUP_ROWS = 8192
REPLACES_KEY = b"mlipstore.replaces"


@dataclass(frozen=True)
class ShardName:
    kind: str
    txn: str
    k: int
    n: int
    digest: str  # first DIGEST_CHARS hex digits of the file's sha256

    @classmethod
    def parse(cls, name: str) -> ShardName | None:
        m = SHARD_RE.match(name)
        if m is None:
            return None
        return cls(m["kind"], m["txn"], int(m["k"]), int(m["n"]), m["digest"])

    def __str__(self) -> str:
        return f"{self.kind}-{self.txn}-{self.k:04d}of{self.n:04d}-{self.digest}.parquet"


def new_txn() -> str:
    """A transaction id: UTC time to the microsecond plus 32 random bits."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}"


def chemical_system(numbers: np.ndarray) -> str:
    return "-".join(sorted({chemical_symbols[z] for z in np.unique(numbers)}))


def elements_of(table: pa.Table) -> list[str]:
    """Sorted element symbols present in a table with a ``chemical_system`` column."""
    systems = table.column("chemical_system").unique().to_pylist()
    return sorted({s for system in systems for s in system.split("-")})


def _vec3(flat_rows: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(flat_rows.reshape(-1), pa.float64()), 3)


def _per_atom(rows: np.ndarray, offsets: pa.Array) -> pa.ListArray:
    return pa.ListArray.from_arrays(offsets, _vec3(rows), type=pa.list_(VEC3))


@dataclass(frozen=True)
class Source:
    """Where a configuration came from, and the tags it was ingested with;
    ``run_finished`` false for a step of a run that was cut before its end."""

    path: str
    sha256: str
    frame: int
    format: str
    tags: tuple[str, ...] = ()
    run_finished: bool = True


def chemical_systems(numbers: np.ndarray, offsets: np.ndarray) -> pa.Array:
    """``chemical_system`` of each configuration (atoms ``numbers[offsets[k]:offsets[k+1]]``),
    computed once per distinct set of elements."""
    n_rows = len(offsets) - 1
    present = np.zeros((n_rows, 128), dtype=bool)
    present[np.repeat(np.arange(n_rows), np.diff(offsets)), numbers] = True
    # one 16-byte key per row: unique over those is a plain sort
    keys = np.packbits(present, axis=1).view("V16").reshape(-1)
    distinct, first, which = np.unique(keys, return_index=True, return_inverse=True)
    names = np.array([chemical_system(np.flatnonzero(present[row])) for row in first],
                     dtype=object)
    return pa.array(names[which], pa.string())


def configs_to_batch(configs: Sequence[Configuration], sources: Sequence[Source],
                     ingested_at: datetime) -> pa.RecordBatch:
    """Build one RecordBatch from configurations and their sources, arrays in bulk."""
    n_atoms = np.fromiter((c.n_atoms for c in configs), np.int32, len(configs))
    offsets = np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int32)
    numbers = np.concatenate([c.numbers for c in configs]).astype(np.uint8)
    forces = np.concatenate([c.forces for c in configs])
    force_norms = np.sqrt(np.einsum("ij,ij->i", forces, forces))
    arrow_offsets = pa.array(offsets)
    columns = {
        "id": pa.array([c.id for c in configs], pa.string()),
        "n_atoms": pa.array(n_atoms),
        "chemical_system": chemical_systems(numbers, offsets),
        "numbers": pa.ListArray.from_arrays(arrow_offsets, pa.array(numbers)),
        "positions": _per_atom(np.concatenate([c.positions for c in configs]), arrow_offsets),
        "cell": pa.FixedSizeListArray.from_arrays(
            _vec3(np.stack([c.cell for c in configs])), 3),
        "pbc": pa.FixedSizeListArray.from_arrays(
            pa.array(np.stack([c.pbc for c in configs]).reshape(-1)), 3),
        "energy": pa.array([c.energy for c in configs], pa.float64()),
        "free_energy": pa.array([c.free_energy for c in configs], pa.float64()),
        "energy_corrected": pa.array([c.energy_corrected for c in configs], pa.float64()),
        "forces": _per_atom(forces, arrow_offsets),
        "stress": _nullable_lists([c.stress for c in configs]),
        "max_force": pa.array(np.maximum.reduceat(force_norms, offsets[:-1]), pa.float64()),
        "energy_weight": pa.array([c.energy_weight for c in configs], pa.float64()),
        "forces_weight": _nullable_lists([c.forces_weight for c in configs]),
        "virial_weight": pa.array([c.virial_weight for c in configs], pa.float64()),
        "run_finished": pa.array([s.run_finished for s in sources], pa.bool_()),
        "source_path": pa.array([s.path for s in sources], pa.string()),
        "source_sha256": pa.array([s.sha256 for s in sources], pa.string()),
        "source_frame": pa.array([s.frame for s in sources], pa.int32()),
        "source_format": pa.array([s.format for s in sources], pa.string()),
        "tags": pa.array([list(s.tags) for s in sources], pa.list_(pa.string())),
        "ingested_at": pa.array([ingested_at] * len(configs), pa.timestamp("us", tz="UTC")),
    }
    return pa.RecordBatch.from_pydict(columns, schema=schema())


def _nullable_lists(rows: Sequence[np.ndarray | None]) -> pa.ListArray:
    """A list<float64> column from per-row arrays (None: null), built in bulk."""
    sizes = np.array([0 if r is None else len(r) for r in rows], dtype=np.int32)
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    present = [r for r in rows if r is not None]
    values = np.concatenate(present) if present else np.zeros(0)
    mask = pa.array([r is None for r in rows])
    return pa.ListArray.from_arrays(offsets, pa.array(values, pa.float64()),
                                    type=pa.list_(pa.float64()), mask=mask)


def open_writer(path: Path, metadata: dict[bytes, bytes] | None = None) -> pq.ParquetWriter:
    """A Parquet writer with the store's schema (plus ``metadata``) and encodings."""
    sch = schema()
    if metadata:
        sch = sch.with_metadata({**sch.metadata, **metadata})
    return pq.ParquetWriter(
        path, sch,
        compression="zstd",
        # dictionaries for the repetitive columns only: a float column with a dictionary
        # is not byte-stream-split (positions and forces came out 25% larger)
        use_dictionary=["n_atoms", "chemical_system", "numbers.list.element", "pbc",
                        "source_path", "source_sha256", "source_format",
                        "tags.list.element", "ingested_at", "run_finished"],
        write_page_checksum=True,  # CRC32 per page: verify() tells which shard is damaged
        # floats compress far better split by byte; ids and sources are high-entropy strings
        use_byte_stream_split=["energy", "free_energy", "energy_corrected", "max_force",
                               "positions.list.element.list.element",
                               "forces.list.element.list.element"],
        write_statistics=["id", "n_atoms", "chemical_system", "energy", "free_energy",
                          "max_force", "source_path", "ingested_at", "run_finished"],
    )
