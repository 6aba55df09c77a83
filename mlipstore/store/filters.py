"""Selecting configurations: a ScanFilter becomes an Arrow expression pushed into Parquet."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import Field, dataclass, field, fields

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from ase.data import chemical_symbols

from .method import UNKNOWN


def check_elements(symbols: Sequence[str] | None) -> Sequence[str] | None:
    """``symbols`` if each is an element symbol; ValueError naming the others."""
    unknown = [s for s in symbols or () if s not in chemical_symbols[1:]]
    if unknown:
        raise ValueError(f"unknown element symbol(s) {', '.join(unknown)} (symbols are "
                         "case-sensitive: Al, Ti)")
    return symbols


def _criterion(help: str, *, cli: str | None = None, positive: bool = False,
               settable: bool = True):
    """A ScanFilter field (default None: not filtered) with what the CLI options and
    params.yaml's filter keys are made from: ``help`` with units, ``cli`` option
    declarations other than ``--field-name``, ``positive`` (a bound above 0), ``settable``
    (False: Python only, neither an option nor a params.yaml key)."""
    return field(default=None, metadata={"help": help, "cli": cli, "positive": positive,
                                         "settable": settable})


@dataclass(frozen=True)
class ScanFilter:
    """Which configurations to read; every criterion that is set must hold. Each field is
    also a CLI option (``criteria``) and a key of params.yaml's ``export`` and
    ``explore.start`` sections (``params.FilterParams``)."""

    elements: Sequence[str] | None = _criterion(
        "Only configurations made of these elements (any subset of them), e.g. Al,Ti.")
    min_atoms: int | None = _criterion("At least this many atoms.", positive=True)
    max_atoms: int | None = _criterion("At most this many atoms.", positive=True)
    min_energy_per_atom: float | None = _criterion(
        "eV/atom, lower bound on the force-consistent energy (free energy where reported, "
        "else energy).")
    max_energy_per_atom: float | None = _criterion(
        "eV/atom, upper bound on the force-consistent energy.")
    max_force: float | None = _criterion("Largest per-atom force norm, eV/Å, inclusive.",
                                         positive=True)
    tags: Sequence[str] | None = _criterion("Any of these tags (repeatable).", cli="--tag")
    run_finished: bool | None = _criterion(
        "Only steps of runs that finished / only the complete steps of runs that were cut "
        "before their end; default: both.", cli="--finished-runs/--unfinished-runs")
    method_fingerprints: Sequence[str] | None = _criterion(
        "Only configurations of these DFT method fingerprints (see `mlipstore info`; "
        "'unknown': those without a stated method); repeatable.",
        cli="--method-fingerprint")
    ids: Sequence[str] | None = _criterion(
        "Only these configuration ids (a selection stored as ids).", settable=False)

    def __post_init__(self) -> None:
        check_elements(self.elements)

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
        if self.method_fingerprints is not None:
            prints = [p for p in self.method_fingerprints if p != UNKNOWN]
            term = pc.field("method_fingerprint").isin(pa.array(prints, pa.string()))
            if UNKNOWN in self.method_fingerprints:
                term = term | pc.field("method_fingerprint").is_null()
            terms.append(term)
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


def criteria() -> list[tuple[Field, type]]:
    """The settable ScanFilter fields with their value type: int, float, bool, or list
    (of strings)."""
    kinds = {"int": int, "float": float, "bool": bool, "Sequence[str]": list}
    return [(f, kinds[f.type.removesuffix(" | None")]) for f in fields(ScanFilter)
            if f.metadata["settable"]]
