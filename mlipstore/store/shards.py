"""Immutable Parquet shards: naming, the transaction id, the writer.

A shard is named ``<kind>-<txn>-<k>of<n>-<digest>.parquet``. ``txn`` identifies the call
that wrote it (UTC time + random suffix, so names sort by time and concurrent writers
never collide); a transaction is visible only once all ``n`` of its shards are in place.
``digest`` is the start of the sha256 of the file's bytes, so any change to a shard, a
single flipped byte included, is detectable (``Store.verify``).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow.parquet as pq

from .codec import schema
from .method import SETTINGS

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
                        "tags.list.element", "ingested_at", "run_finished",
                        "method_fingerprint", *(f"method.{name}" for name in SETTINGS)],
        write_page_checksum=True,  # CRC32 per page: verify() tells which shard is damaged
        # floats compress far better split by byte; ids and sources are high-entropy strings
        use_byte_stream_split=["energy", "free_energy", "energy_corrected", "max_force",
                               "positions.list.element.list.element",
                               "forces.list.element.list.element"],
        write_statistics=["id", "n_atoms", "chemical_system", "energy", "free_energy",
                          "max_force", "source_path", "ingested_at", "run_finished",
                          "method_fingerprint"],
    )
