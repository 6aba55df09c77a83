"""The Arrow schema of a stored configuration: one row per DFT configuration.

Units and conventions are ASE's and are written into every shard's schema metadata,
so any Arrow/Parquet reader can interpret a shard without mlipstore.
"""

from __future__ import annotations

import json

import pyarrow as pa

SCHEMA_VERSION = 2
# what changed, version by version (older shards are read as the current version: see conform)
HISTORY = {
    1: "first version",
    2: "energy nullable; energy_corrected, energy_weight, forces_weight, virial_weight and "
       "run_finished added; stress a variable-length list (pyarrow < 26 cannot read a "
       "nullable fixed-size list back from Parquet)",
}

VEC3 = pa.list_(pa.float64(), 3)

UNITS = {
    "positions": "Angstrom",
    "cell": "Angstrom",
    "energy": "eV",
    "free_energy": "eV",
    "energy_corrected": "eV",
    "forces": "eV/Angstrom",
    "stress": "eV/Angstrom^3",
    "max_force": "eV/Angstrom",
}

CONVENTIONS = {
    "stress": "Voigt order xx yy zz yz xz xy, ASE sign (positive = tensile; "
    "stress = -virial/volume)",
    "energy": "the code's energy: for VASP 'energy(sigma->0)', else the code's total energy; "
    "null where the source gives only energy_corrected",
    "energy_corrected": "the fit target as the source gave it (pacemaker's energy_corrected: "
    "an energy minus the source's per-element reference energies); null if it gives none",
    "weights": "per-configuration loss weights as the source gave them (pacemaker w_energy "
    "and per-atom w_forces; GRACE energy_weight, force_weight, virial_weight); null if none",
    "run_finished": "false where the configuration is a complete step of a run that was cut "
    "before its end (wall-time limit, killed job); its cut step is never stored",
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
    _field("energy", pa.float64(), nullable=True, doc=CONVENTIONS["energy"]),
    _field("free_energy", pa.float64(), nullable=True, doc=CONVENTIONS["free_energy"]),
    _field("energy_corrected", pa.float64(), nullable=True, doc=CONVENTIONS["energy_corrected"]),
    _field("forces", pa.list_(VEC3)),
    _field("stress", pa.list_(pa.float64()), nullable=True,
           doc=CONVENTIONS["stress"] + "; 6 values"),
    _field("max_force", pa.float64(), doc=CONVENTIONS["max_force"]),
    _field("energy_weight", pa.float64(), nullable=True, doc=CONVENTIONS["weights"]),
    _field("forces_weight", pa.list_(pa.float64()), nullable=True,
           doc=CONVENTIONS["weights"] + "; one per atom"),
    _field("virial_weight", pa.float64(), nullable=True, doc=CONVENTIONS["weights"]),
    _field("run_finished", pa.bool_(), doc=CONVENTIONS["run_finished"]),
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


class SchemaError(ValueError):
    """A shard this mlipstore cannot read: not a shard, or of a newer schema version."""


def check_schema_version(meta: dict[bytes, bytes] | None, where: str) -> int:
    """Return the schema version recorded in Parquet metadata; raise SchemaError if it is
    missing or newer than this mlipstore's."""
    raw = (meta or {}).get(b"mlipstore.schema_version")
    if raw is None:
        raise SchemaError(f"{where}: not an mlipstore shard (no schema version in metadata)")
    try:
        version = int(raw)
    except ValueError:
        raise SchemaError(f"{where}: unreadable schema version {raw!r}") from None
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: schema version {version} is newer than this mlipstore's "
            f"({SCHEMA_VERSION}); upgrade mlipstore (pip install -U mlipstore) to read it"
        )
    return version


def conform(table: pa.Table) -> pa.Table:
    """A table of any earlier schema version as the current version: columns added since
    are null (``run_finished`` true: older versions stored finished runs only), ``stress``
    becomes a variable-length list. The values themselves are unchanged."""
    sch = schema()
    columns = []
    for field in sch:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.name == "run_finished":
            columns.append(pa.array([True] * table.num_rows, pa.bool_()))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
    return pa.Table.from_arrays(columns, schema=sch)
