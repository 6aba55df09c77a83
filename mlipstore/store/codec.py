"""The Arrow codec of a stored configuration: the schema (one row per DFT configuration,
units and conventions in its metadata, so any Arrow/Parquet reader can interpret a shard
without mlipstore), configurations -> Arrow batches in bulk, and stored rows -> flat numpy
columns or configurations again, without per-atom Python loops.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
from ase.data import chemical_symbols

from ..errors import SchemaError
from . import method as dft_method
from .configuration import Configuration

SCHEMA_VERSION = 3
# what changed, version by version (older shards are read as the current version: see conform)
HISTORY = {
    1: "first version",
    2: "energy nullable; energy_corrected, energy_weight, forces_weight, virial_weight and "
       "run_finished added; stress a variable-length list (pyarrow < 26 cannot read a "
       "nullable fixed-size list back from Parquet)",
    3: "method (the DFT settings the source states) and method_fingerprint added",
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
    "method": "the DFT settings the source states, each null where it does not state it "
    "(cutoffs and smearing width in eV); null where the source states none",
    "method_fingerprint": "hash over the method's settings except code_version (see "
    "store.method); equal fingerprints: computed the same way as far as the sources say",
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
    _field("method", dft_method.ARROW_TYPE, nullable=True, doc=CONVENTIONS["method"]),
    _field("method_fingerprint", pa.string(), nullable=True,
           doc=CONVENTIONS["method_fingerprint"]),
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


# -- configurations -> Arrow --

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
    methods, fingerprints = dft_method.to_arrow([c.method for c in configs])
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
        "method": methods,
        "method_fingerprint": fingerprints,
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


# -- Arrow -> columns and configurations --


@dataclass
class Columns:
    """A table's columns as flat numpy arrays plus per-row atom offsets."""

    ids: list[str]
    offsets: np.ndarray  # (rows + 1,) atom offsets
    numbers: np.ndarray  # (atoms,)
    positions: np.ndarray  # (atoms, 3)
    forces: np.ndarray  # (atoms, 3)
    cells: np.ndarray  # (rows, 3, 3)
    pbc: np.ndarray  # (rows, 3)
    energy: np.ndarray  # (rows,), NaN where null
    free_energy: np.ndarray  # (rows,), NaN where null
    energy_corrected: np.ndarray  # (rows,), NaN where null
    stress: np.ndarray  # (rows, 6), NaN where null
    energy_weight: np.ndarray  # (rows,), NaN where null
    forces_weight: np.ndarray  # (atoms,), NaN where the row has none
    virial_weight: np.ndarray  # (rows,), NaN where null

    @classmethod
    def from_table(cls, table: pa.Table) -> Columns:
        """Columns of a table of the current schema (see ``schema.conform``)."""
        def chunk(name: str):
            return table.column(name).combine_chunks()

        def nullable(name: str) -> np.ndarray:
            return chunk(name).to_numpy(zero_copy_only=False).astype(np.float64)

        numbers = chunk("numbers")
        offsets = numbers.offsets.to_numpy() - numbers.offsets[0].as_py()
        rows = table.num_rows
        return cls(
            ids=table.column("id").to_pylist(),
            offsets=offsets,
            numbers=numbers.flatten().to_numpy().astype(np.int64),
            positions=_flat_vec3(chunk("positions")),
            forces=_flat_vec3(chunk("forces")),
            cells=chunk("cell").flatten().flatten().to_numpy().reshape(rows, 3, 3),
            pbc=chunk("pbc").flatten().to_numpy(zero_copy_only=False).reshape(rows, 3),
            energy=nullable("energy"),
            free_energy=nullable("free_energy"),
            energy_corrected=nullable("energy_corrected"),
            stress=_nullable_fixed(chunk("stress"), 6),
            energy_weight=nullable("energy_weight"),
            forces_weight=_per_atom_or_nan(chunk("forces_weight"), offsets),
            virial_weight=nullable("virial_weight"),
        )

    def atoms_slice(self, row: int) -> slice:
        return slice(self.offsets[row], self.offsets[row + 1])


def _flat_vec3(arr: pa.ListArray) -> np.ndarray:
    return arr.flatten().flatten().to_numpy().reshape(-1, 3)


def _nullable_fixed(arr: pa.ListArray, width: int) -> np.ndarray:
    """(rows, width) values of a list column whose valid rows have ``width`` values."""
    out = np.full((len(arr), width), np.nan)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        out[valid] = arr.filter(arr.is_valid()).flatten().to_numpy().reshape(-1, width)
    return out


def _per_atom_or_nan(arr: pa.ListArray, offsets: np.ndarray) -> np.ndarray:
    """(atoms,) values of a per-atom list column; NaN for the atoms of null rows."""
    out = np.full(offsets[-1], np.nan)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        atoms = np.repeat(valid, np.diff(offsets))
        out[atoms] = arr.filter(arr.is_valid()).flatten().to_numpy()
    return out


def _or_none(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


def table_to_configurations(table: pa.Table) -> Iterator[tuple[Configuration, str]]:
    """Yield (Configuration, id) for every row of a store table."""
    cols = Columns.from_table(table)
    methods = (dft_method.from_table(table) if "method" in table.column_names
               else [None] * table.num_rows)
    for row in range(table.num_rows):
        atoms = cols.atoms_slice(row)
        stress = cols.stress[row]
        forces_weight = cols.forces_weight[atoms]
        config = Configuration(
            numbers=cols.numbers[atoms], positions=cols.positions[atoms],
            cell=cols.cells[row], pbc=cols.pbc[row], energy=_or_none(cols.energy[row]),
            free_energy=_or_none(cols.free_energy[row]),
            forces=cols.forces[atoms], stress=None if np.isnan(stress[0]) else stress,
            energy_corrected=_or_none(cols.energy_corrected[row]),
            energy_weight=_or_none(cols.energy_weight[row]),
            forces_weight=None if np.isnan(forces_weight).all() else forces_weight,
            virial_weight=_or_none(cols.virial_weight[row]),
            method=methods[row],
        )
        yield config, cols.ids[row]
