"""The Arrow schema of a stored configuration: one row per DFT configuration.

Units and conventions are ASE's and are written into every shard's schema metadata,
so any Arrow/Parquet reader can interpret a shard without mlipstore.
"""

from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = 1

VEC3 = pa.list_(pa.float64(), 3)

UNITS = {
    "positions": "Angstrom",
    "cell": "Angstrom",
    "energy": "eV",
    "free_energy": "eV",
    "forces": "eV/Angstrom",
    "stress": "eV/Angstrom^3",
    "max_force": "eV/Angstrom",
}

CONVENTIONS = {
    "stress": "Voigt order xx yy zz yz xz xy, ASE sign (positive = tensile; "
    "stress = -virial/volume)",
    "energy": "the code's energy: for VASP 'energy(sigma->0)', else the code's total energy",
    "free_energy": "the code's free energy (VASP TOTEN, QE/aims total free energy); null if "
    "the code does not report one. Forces are derivatives of the free energy",
    "cell": "row vectors a, b, c",
    "chemical_system": "sorted unique element symbols joined by '-', e.g. 'Al-Ti'",
    "max_force": "largest per-atom force norm of the configuration (derived, for filtering)",
    "id": "content hash of the configuration, see identity.HASH_SCHEME",
    "missing": "a value the source does not report is null, never 0",
}


def _field(name: str, type_: pa.DataType, nullable: bool = False, doc: str = "") -> pa.Field:
    meta = {"doc": doc} if doc else {}
    if name in UNITS:
        meta["unit"] = UNITS[name]
    return pa.field(name, type_, nullable=nullable, metadata=meta or None)


FIELDS = [
    _field("id", pa.string(), doc="content hash (hex), unique in the store"),
    _field("n_atoms", pa.int32()),
    _field("chemical_system", pa.string(), doc=CONVENTIONS["chemical_system"]),
    _field("numbers", pa.list_(pa.uint8()), doc="atomic numbers"),
    _field("positions", pa.list_(VEC3)),
    _field("cell", pa.list_(VEC3, 3), doc=CONVENTIONS["cell"]),
    _field("pbc", pa.list_(pa.bool_(), 3)),
    _field("energy", pa.float64(), doc=CONVENTIONS["energy"]),
    _field("free_energy", pa.float64(), nullable=True, doc=CONVENTIONS["free_energy"]),
    _field("forces", pa.list_(VEC3)),
    _field("stress", pa.list_(pa.float64(), 6), nullable=True, doc=CONVENTIONS["stress"]),
    _field("max_force", pa.float64(), doc=CONVENTIONS["max_force"]),
    _field("source_path", pa.string(), doc="path of the file the frame was read from"),
    _field("source_sha256", pa.string(), doc="sha256 of that file's bytes"),
    _field("source_frame", pa.int32(), doc="0-based frame index within the file"),
    _field("source_format", pa.string(), doc="reader format, e.g. vasp-out, extxyz"),
    _field("tags", pa.list_(pa.string()), doc="tags given at ingest"),
    _field("ingested_at", pa.timestamp("us", tz="UTC")),
]


def schema() -> pa.Schema:
    """The schema of every shard, with units and conventions as metadata."""
    from .identity import HASH_SCHEME

    meta = {
        "mlipstore.schema_version": str(SCHEMA_VERSION),
        "mlipstore.hash_scheme": HASH_SCHEME,
        "mlipstore.units": json.dumps(UNITS),
        "mlipstore.conventions": json.dumps(CONVENTIONS),
    }
    return pa.schema(FIELDS, metadata=meta)


def check_schema_version(meta: dict[bytes, bytes] | None, where: str) -> int:
    """Return the schema version recorded in Parquet metadata; raise if unknown."""
    raw = (meta or {}).get(b"mlipstore.schema_version")
    if raw is None:
        raise ValueError(f"{where}: not an mlipstore shard (no schema version in metadata)")
    version = int(raw)
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{where}: schema version {version} is newer than this mlipstore "
            f"({SCHEMA_VERSION}); upgrade mlipstore"
        )
    return version
