"""Selecting configurations: a ScanFilter becomes an Arrow expression pushed into Parquet."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from ase.data import chemical_symbols


@dataclass(frozen=True)
class ScanFilter:
    """Which configurations to read; every criterion that is set must hold.

    elements: only configurations made of these elements (any subset of them).
    min_atoms/max_atoms: bounds on the number of atoms, inclusive.
    min/max_energy_per_atom: eV/atom window on the force-consistent energy
        (free energy where reported, else energy).
    max_force: largest per-atom force norm, eV/Angstrom, inclusive.
    tags: configurations carrying at least one of these tags.
    run_finished: True, only steps of runs that finished; False, only the complete steps
        of runs that were cut before their end.
    ids: only these configuration ids (a selection stored as ids).
    """

    elements: Sequence[str] | None = None
    min_atoms: int | None = None
    max_atoms: int | None = None
    min_energy_per_atom: float | None = None
    max_energy_per_atom: float | None = None
    max_force: float | None = None
    tags: Sequence[str] | None = None
    run_finished: bool | None = None
    ids: Sequence[str] | None = None

    def __post_init__(self) -> None:
        unknown = [s for s in self.elements or () if s not in chemical_symbols[1:]]
        if unknown:
            raise ValueError(f"unknown element symbol(s) {', '.join(unknown)} (symbols are "
                             "case-sensitive: Al, Ti)")

    def expression(self) -> ds.Expression | None:
        """The part of the filter Parquet can evaluate (row-group statistics prune)."""
        terms = []
        if self.elements is not None:
            symbols = sorted(set(self.elements))
            systems = [
                "-".join(combo)
                for r in range(1, len(symbols) + 1)
                for combo in itertools.combinations(symbols, r)
            ]
            terms.append(pc.field("chemical_system").isin(systems))
        if self.min_atoms is not None:
            terms.append(pc.field("n_atoms") >= self.min_atoms)
        if self.max_atoms is not None:
            terms.append(pc.field("n_atoms") <= self.max_atoms)
        if self.min_energy_per_atom is not None or self.max_energy_per_atom is not None:
            energy = pc.coalesce(pc.field("free_energy"), pc.field("energy"))
            per_atom = pc.divide(energy, pc.field("n_atoms").cast(pa.float64()))
            if self.min_energy_per_atom is not None:
                terms.append(per_atom >= self.min_energy_per_atom)
            if self.max_energy_per_atom is not None:
                terms.append(per_atom <= self.max_energy_per_atom)
        if self.max_force is not None:
            terms.append(pc.field("max_force") <= self.max_force)
        if self.run_finished is not None:  # null in version-1 shards: finished runs
            terms.append(pc.coalesce(pc.field("run_finished"), True) == self.run_finished)
        if self.ids is not None:
            terms.append(pc.field("id").isin(list(self.ids)))
        if not terms:
            return None
        expr = terms[0]
        for term in terms[1:]:
            expr = expr & term
        return expr

    def apply_tags(self, table: pa.Table) -> pa.Table:
        """Keep rows with at least one of ``tags`` (list columns have no pushdown)."""
        if not self.tags or table.num_rows == 0:
            return table
        tags = table.column("tags").combine_chunks()
        hit = pc.is_in(pc.list_flatten(tags), pa.array(list(self.tags), pa.string()))
        rows = pc.filter(pc.list_parent_indices(tags), hit).to_numpy()
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[rows] = True
        return table.filter(mask)
