"""Export to pacemaker: the pickled, gzipped pandas DataFrame that ``pacemaker`` reads.

Columns: ``name`` (the configuration id), ``ase_atoms``, ``energy``, ``forces``,
``energy_corrected`` (the fit target) and ``stress`` where known.

``energy`` is the force-consistent energy: the code's free energy where it reports one
(VASP TOTEN), else its energy, because the forces are derivatives of the free energy.
``energy_corrected = energy - sum of the per-element reference energies`` (isolated-atom
energies given by the user, or fitted with "auto"; none means zero), minus a delta-learning
baseline where one is used. References and baseline are recorded in
``DataFrame.attrs["mlipstore"]``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import ase
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from ase.data import atomic_numbers, chemical_symbols
from isal import igzip
from tqdm import tqdm

from ._io import atomic_write
from .filters import ScanFilter
from .reference import PairPotential
from .rows import Columns
from .shards import elements_of
from .store import Store

ENERGY_RULE = "free_energy where the code reports it (VASP TOTEN), else energy"


class ExportError(ValueError):
    """The export cannot be written; the message says why."""


@dataclass
class ExportReport:
    path: str
    n_structures: int
    n_atoms: int
    elements: list[str]
    reference_energies: dict[str, float] = field(default_factory=dict)


def reference_offsets(numbers: np.ndarray, offsets: np.ndarray,
                      reference_energies: Mapping[str, float] | None) -> np.ndarray:
    """Per-structure sum of reference energies (eV); zeros when none are given."""
    n_rows = len(offsets) - 1
    if not reference_energies:
        return np.zeros(n_rows)
    unknown = set(reference_energies) - set(atomic_numbers)
    if unknown:
        raise ExportError(f"reference energies for unknown elements: {sorted(unknown)}")
    table = np.full(119, np.nan)
    for symbol, value in reference_energies.items():
        table[atomic_numbers[symbol]] = value
    per_atom = table[numbers]
    missing = sorted({chemical_symbols[z] for z in np.unique(numbers[np.isnan(per_atom)])})
    if missing:
        raise ExportError(f"no reference energy for {', '.join(missing)}: give one for every "
                          "element in the exported data, or none at all")
    return np.add.reduceat(per_atom, offsets[:-1]) if n_rows else np.zeros(0)


def pacemaker_frame(table: pa.Table,
                    reference_energies: Mapping[str, float] | str | None = None,
                    baseline: PairPotential | None = None, progress: bool = False
                    ) -> pd.DataFrame:
    """The DataFrame pacemaker reads, built from store rows.

    ``reference_energies``: per-element eV, ``"auto"`` (fitted here, see
    fit_reference_energies) or None. With a ``baseline`` (delta learning) its energy,
    forces and stress are subtracted from the targets: ``energy_corrected = energy -
    baseline - references``, ``forces`` and ``stress`` become DFT - baseline, and
    ``energy`` stays the DFT energy.
    """
    cols = Columns.from_table(table)
    energy = np.where(np.isnan(cols.free_energy), cols.energy, cols.free_energy)
    build = atoms_builder()
    rows = range(table.num_rows)
    if progress:  # no tqdm object otherwise (see ingest.ingest)
        rows = tqdm(rows, desc="export", unit="config", leave=False)
    atoms = [build(cols.numbers[cols.atoms_slice(row)], cols.positions[cols.atoms_slice(row)],
                   cols.cells[row], cols.pbc[row]) for row in rows]
    baseline_energy, forces_all, stress_all = np.zeros(len(atoms)), cols.forces, cols.stress
    if baseline is not None:
        baseline_energy, forces_all, stress_all = _minus_baseline(baseline, atoms, cols)
    forces = [forces_all[cols.atoms_slice(row)] for row in range(len(atoms))]
    stress = [None if np.isnan(s[0]) else s for s in stress_all]
    target = energy - baseline_energy
    if isinstance(reference_energies, str):  # "auto"
        reference_energies = fit_reference_energies(cols.numbers, cols.offsets, target)
    corrected = target - reference_offsets(cols.numbers, cols.offsets, reference_energies)
    df = pd.DataFrame({
        "name": cols.ids,
        "ase_atoms": atoms,
        "energy": energy,
        "forces": forces,
        "energy_corrected": corrected,
        "stress": stress,
    })
    if baseline is not None:
        df["energy_baseline"] = baseline_energy
    df.attrs["mlipstore"] = {
        "energy": ENERGY_RULE,
        "reference_energies": dict(reference_energies or {}),
        "baseline": baseline.describe() if baseline is not None else None,
        "units": {"energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3 (Voigt)"},
    }
    return df


def atoms_builder() -> Callable[..., ase.Atoms]:
    """``build(numbers, positions, cell, pbc) -> ase.Atoms``, made the way unpickling makes
    them (instance plus state), about ten times faster than ``ase.Atoms(...)``, which
    normalises arguments that here are already arrays of the right type and shape.
    Falls back to the constructor if ASE's attribute layout is not the expected one."""
    template = ase.Atoms(numbers=[1], positions=np.zeros((1, 3)), cell=np.eye(3), pbc=True)
    if set(vars(template)) != _ATOMS_STATE or set(template.arrays) != {"numbers", "positions"}:
        return lambda numbers, positions, cell, pbc: ase.Atoms(
            numbers=numbers, positions=positions, cell=cell, pbc=pbc)
    cell_type, celldisp = type(template.cell), template._celldisp

    def build(numbers, positions, cell, pbc) -> ase.Atoms:
        atoms = ase.Atoms.__new__(ase.Atoms)
        atoms.__dict__.update(
            _cellobj=cell_type(np.array(cell, dtype=np.float64)), _pbc=np.array(pbc, bool),
            arrays={"numbers": np.array(numbers, dtype=np.int64),
                    "positions": np.array(positions, dtype=np.float64)},
            _celldisp=celldisp.copy(), _constraints=[], info={}, _calc=None)
        return atoms
    return build


_ATOMS_STATE = {"_cellobj", "_pbc", "arrays", "_celldisp", "_constraints", "info", "_calc"}


def _minus_baseline(baseline: PairPotential, atoms: list[ase.Atoms], cols: Columns
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The baseline's energy per structure, and the DFT forces and stress minus the
    baseline's (a missing stress stays NaN)."""
    energy, forces, stress = np.zeros(len(atoms)), cols.forces.copy(), cols.stress.copy()
    for row, structure in enumerate(atoms):
        baseline.calculate(structure, ["energy", "forces", "stress"])
        energy[row] = baseline.results["energy"]
        forces[cols.atoms_slice(row)] -= baseline.results["forces"]
        stress[row] -= baseline.results["stress"]
    return energy, forces, stress


def write_pickle_gzip(df: pd.DataFrame, path: str | Path) -> None:
    """Write ``df`` as a gzipped pickle atomically and reproducibly (no name or time
    in the gzip header), so the same data gives the same bytes and DVC hash.

    ISA-L's gzip compresses about 20 times faster than zlib at the same ratio; the
    stream is plain gzip, which pandas (and so pacemaker) reads as any other."""
    with atomic_write(path, "wb") as raw, igzip.IGzipFile(
            filename="", mode="wb", fileobj=raw, compresslevel=1, mtime=0) as gz:
        pickle.dump(df, gz, protocol=pickle.HIGHEST_PROTOCOL)


def export_for_pacemaker(store: Store, path: str | Path, where: ScanFilter | None = None,
                         reference_energies: Mapping[str, float] | None = None,
                         progress: bool = False) -> ExportReport:
    """Write the configurations matching ``where`` as a pacemaker ``.pckl.gzip``."""
    table = store.scan(where)
    if table.num_rows == 0:
        raise ExportError(f"no configurations in {store.root} match the filter: nothing to "
                          "export")
    df = pacemaker_frame(table, reference_energies, progress=progress)
    write_pickle_gzip(df, path)
    return ExportReport(
        path=str(path),
        n_structures=len(df),
        n_atoms=int(pc.sum(table.column("n_atoms")).as_py()),
        elements=elements_of(table),
        reference_energies=dict(reference_energies or {}),
    )


def fit_reference_energies(numbers: np.ndarray, offsets: np.ndarray, energies: np.ndarray
                           ) -> dict[str, float]:
    """Per-element energies (eV) that best explain ``energies`` (one per structure, atoms
    ``numbers[offsets[k]:offsets[k+1]]``) by composition alone: least squares, and
    minimum-norm where the compositions cannot separate two elements (e.g. a set that is
    all 1:1 TiAl)."""
    n_rows = len(offsets) - 1
    if n_rows == 0:
        return {}
    elements = np.unique(numbers)
    rows = np.repeat(np.arange(n_rows), np.diff(offsets))
    composition = np.zeros((n_rows, len(elements)))
    np.add.at(composition, (rows, np.searchsorted(elements, numbers)), 1.0)
    refs, *_ = np.linalg.lstsq(composition, energies, rcond=None)
    return {chemical_symbols[z]: float(e) for z, e in zip(elements, refs, strict=True)}
