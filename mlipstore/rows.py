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
    energy: np.ndarray  # (rows,)
    free_energy: np.ndarray  # (rows,), NaN where null
    stress: np.ndarray  # (rows, 6), NaN where null

    @classmethod
    def from_table(cls, table: pa.Table) -> Columns:
        def chunk(name: str):
            return table.column(name).combine_chunks()

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
            energy=chunk("energy").to_numpy(),
            free_energy=chunk("free_energy").to_numpy(zero_copy_only=False),
            stress=_nullable_fixed(chunk("stress"), 6),
        )

    def atoms_slice(self, row: int) -> slice:
        return slice(self.offsets[row], self.offsets[row + 1])


def _flat_vec3(arr: pa.ListArray) -> np.ndarray:
    return arr.flatten().flatten().to_numpy().reshape(-1, 3)


def _nullable_fixed(arr: pa.FixedSizeListArray, width: int) -> np.ndarray:
    out = np.full((len(arr), width), np.nan)
    valid = arr.is_valid().to_numpy(zero_copy_only=False)
    if valid.any():
        out[valid] = arr.filter(arr.is_valid()).flatten().to_numpy().reshape(-1, width)
    return out


def table_to_configurations(table: pa.Table) -> Iterator[tuple[Configuration, str]]:
    """Yield (Configuration, id) for every row of a store table."""
    cols = Columns.from_table(table)
    for row in range(table.num_rows):
        atoms = cols.atoms_slice(row)
        free_energy = cols.free_energy[row]
        stress = cols.stress[row]
        config = Configuration(
            numbers=cols.numbers[atoms], positions=cols.positions[atoms],
            cell=cols.cells[row], pbc=cols.pbc[row], energy=float(cols.energy[row]),
            free_energy=None if np.isnan(free_energy) else float(free_energy),
            forces=cols.forces[atoms], stress=None if np.isnan(stress[0]) else stress,
        )
        yield config, cols.ids[row]
