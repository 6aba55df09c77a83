"""Export to pacemaker: the pickled, gzipped pandas DataFrame that ``pacemaker`` reads.

Columns: ``name`` (the configuration id), ``ase_atoms``, ``energy`` (the force-consistent
DFT energy, NaN where the source gave only ``energy_corrected``), ``forces``,
``energy_corrected`` (the fit target, see ``targets``), ``stress`` where known, and where
any source gave loss weights pacemaker's ``w_energy`` and per-atom ``w_forces`` (and
``virial_weight``); a configuration without them gets the mean of the given ones.
A delta-learning baseline is subtracted from the targets. References, baseline and how
the targets were made are recorded in ``DataFrame.attrs["mlipstore"]``.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import ase
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from isal import igzip
from tqdm import tqdm

from .._io import atomic_write
from ..errors import ExportError
from ..store.codec import Columns, elements_of
from ..store.filters import ScanFilter
from ..store.method import UNKNOWN, differences, side_by_side, summarize
from ..store.store import StoreReader
from .reference import PairPotential
from .targets import ENERGY_RULE, TargetError, fit_targets, force_consistent_energy

log = logging.getLogger(__name__)


@dataclass
class ExportReport:
    path: str
    n_structures: int
    n_atoms: int
    elements: list[str]
    reference_energies: dict[str, float] = field(default_factory=dict)
    targets: dict = field(default_factory=dict)  # how the fit targets were made
    methods: dict = field(default_factory=dict)  # the DFT methods and the choice made


def check_methods(table: pa.Table, allow_mixed: bool = False,
                  chosen: list[str] | None = None) -> dict:
    """The DFT methods of the rows to export, as the lineage records them: ``summary``
    (configurations and settings per fingerprint), ``allow_mixed`` and ``chosen`` (the
    fingerprints the filter kept). ExportError with a table of what differs if the rows
    mix fingerprints, or stated methods with unknown ones, unless ``allow_mixed``."""
    summary = summarize(table)
    if len(summary) > 1 and not allow_mixed:
        differ = differences(summary)
        unknown = summary.get(UNKNOWN, {}).get("n_configs", 0)
        lines = side_by_side(summary, only=differ)
        raise ExportError(
            f"the export mixes {len(summary)} DFT methods, whose energies are not comparable "
            f"(settings that differ: {', '.join(differ)}"
            + (f"; {unknown} configurations state no method" if unknown else "") + "):\n  "
            + "\n  ".join(lines) + "\nchoose one with --method-fingerprint FINGERPRINT "
            "(params.yaml: export.method_fingerprints: [FINGERPRINT]), or export them "
            "together with --allow-mixed-methods (params.yaml: export.methods: allow_mixed)")
    if UNKNOWN in summary:
        log.warning("%d of %d configurations state no DFT method: whether they were "
                    "computed alike cannot be checked", summary[UNKNOWN]["n_configs"],
                    table.num_rows)
    return {"summary": summary, "allow_mixed": allow_mixed,
            "chosen": list(chosen) if chosen is not None else None}


def pacemaker_frame(table: pa.Table,
                    reference_energies: Mapping[str, float] | str | None = None,
                    baseline: PairPotential | None = None, progress: bool = False,
                    rereference: bool = False, allow_mixed_references: bool = False
                    ) -> pd.DataFrame:
    """The DataFrame pacemaker reads, built from store rows.

    ``reference_energies``: per-element eV, ``"auto"`` or None, for targets computed from
    the raw energy; a source's own ``energy_corrected`` is kept unless ``rereference``
    (see ``targets.fit_targets``; TargetError where references would be mixed). With a
    ``baseline`` (delta learning) its energy, forces and stress are subtracted from the
    targets: ``forces`` and ``stress`` become DFT - baseline, ``energy`` stays DFT's.
    """
    cols = Columns.from_table(table)
    build = atoms_builder()
    rows = range(table.num_rows)
    if progress:  # no tqdm object otherwise (see ingest.ingest)
        rows = tqdm(rows, desc="export", unit="config", leave=False)
    atoms = [build(cols.numbers[cols.atoms_slice(row)], cols.positions[cols.atoms_slice(row)],
                   cols.cells[row], cols.pbc[row]) for row in rows]
    baseline_energy, forces_all, stress_all = np.zeros(len(atoms)), cols.forces, cols.stress
    if baseline is not None:
        baseline_energy, forces_all, stress_all = _minus_baseline(baseline, atoms, cols)
    sources = np.array(table.column("source_path").to_pylist(), dtype=object)
    corrected, targets = fit_targets(cols, sources, reference_energies, rereference,
                                     allow_mixed_references, baseline_energy)
    df = pd.DataFrame({
        "name": cols.ids,
        "ase_atoms": atoms,
        "energy": force_consistent_energy(cols),
        "forces": [forces_all[cols.atoms_slice(row)] for row in range(len(atoms))],
        "energy_corrected": corrected,
        "stress": [None if np.isnan(s[0]) else s for s in stress_all],
    })
    _add_weights(df, cols)
    if baseline is not None:
        df["energy_baseline"] = baseline_energy
    df.attrs["mlipstore"] = {
        "energy": ENERGY_RULE,
        "reference_energies": targets.pop("reference_energies"),
        "targets": targets,
        "baseline": baseline.describe() if baseline is not None else None,
        "units": {"energy": "eV", "forces": "eV/Angstrom", "stress": "eV/Angstrom^3 (Voigt)"},
    }
    return df


def _add_weights(df: pd.DataFrame, cols: Columns) -> None:
    """pacemaker's ``w_energy`` and ``w_forces`` (and ``virial_weight``) where any row has
    a source weight; a row without gets the mean of the given ones (per structure, per
    atom), on their scale (pacemaker's weights are normalised to sum 1)."""
    if np.isnan(cols.energy_weight).all() and np.isnan(cols.forces_weight).all():
        return
    df["w_energy"] = _filled(cols.energy_weight)
    per_atom = _filled(cols.forces_weight)
    df["w_forces"] = [per_atom[cols.atoms_slice(row)] for row in range(len(df))]
    if not np.isnan(cols.virial_weight).all():
        df["virial_weight"] = _filled(cols.virial_weight)


def _filled(weights: np.ndarray) -> np.ndarray:
    """``weights`` with NaN replaced by the mean of the others (1 if there are none)."""
    given = weights[~np.isnan(weights)]
    return np.where(np.isnan(weights), given.mean() if len(given) else 1.0, weights)


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


def export_store(store: StoreReader, path: str | Path, where: ScanFilter | None = None,
                 reference_energies: Mapping[str, float] | str | None = None,
                 progress: bool = False, rereference: bool = False,
                 allow_mixed_references: bool = False, allow_mixed_methods: bool = False,
                 writer: Callable[[pd.DataFrame, Path], None] | None = None) -> ExportReport:
    """Write the configurations matching ``where`` as a pacemaker ``.pckl.gzip`` (or with
    ``writer``, e.g. one of ``trainers.FORMATS``), atomically; refused if they mix DFT
    methods, unless ``allow_mixed_methods`` (``check_methods``). The original design
    called this function ``export_for_pacemaker`` (the name of ``TrainingData``'s method
    that writes a project's pool and test files)."""
    where = where or ScanFilter()
    table = store.scan(where)
    if table.num_rows == 0:
        present = elements_of(store.scan(columns=["chemical_system"]))
        raise ExportError(f"no configurations in {store.label} match the filter: nothing to "
                          f"export (the store has {' '.join(present) or 'no'} elements)")
    try:
        methods = check_methods(table, allow_mixed_methods, where.method_fingerprints)
    except ExportError as err:
        raise ExportError(f"{store.label}: {err}") from None
    try:
        df = pacemaker_frame(table, reference_energies, progress=progress,
                             rereference=rereference,
                             allow_mixed_references=allow_mixed_references)
    except TargetError as err:
        raise ExportError(f"{store.label}: {err}") from err
    df.attrs["mlipstore"]["methods"] = methods
    (writer or write_pickle_gzip)(df, Path(path))
    meta = df.attrs["mlipstore"]
    return ExportReport(
        path=str(path),
        n_structures=len(df),
        n_atoms=int(pc.sum(table.column("n_atoms")).as_py()),
        elements=elements_of(table),
        reference_energies=meta["reference_energies"],
        targets=meta["targets"],
        methods=methods,
    )


export_for_pacemaker = export_store  # the original design's name
