"""From stored rows back to per-configuration numpy arrays, without per-atom Python loops."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .configuration import Configuration


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
        )
        yield config, cols.ids[row]
