"""Fit targets: pacemaker's ``energy_corrected`` for each exported configuration.

A configuration whose source gave an ``energy_corrected`` (a pacemaker DataFrame) is
fitted to exactly that value. Any other is fitted to its force-consistent energy (the
free energy where the code reports one, VASP's TOTEN, because the forces are its
derivatives) minus the sum of per-element reference energies: given, fitted by least
squares (``auto``) or none. With ``rereference`` every target is recomputed that way.

Targets made with different references cannot be fitted together, so rows are grouped by
where their target comes from (each source that gave ``energy_corrected``; the rows
computed here) and the groups must agree: a source's references are recovered from its
rows that carry both energies (least squares by composition), and a group whose
references are unknown or differ is refused, never mixed silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
from ase.data import atomic_numbers, chemical_symbols

from ..errors import TargetError
from ..store.codec import Columns
from ..store.store import StoreReader

ENERGY_RULE = "free_energy where the code reports it (VASP TOTEN), else energy"
REFERENCE_TOL = 1e-4  # eV/atom: references that differ by less are the same


@dataclass
class SourceReferences:
    """The reference energies implied by one source's ``energy_corrected``."""

    source: str
    n_configs: int  # configurations whose target is the source's energy_corrected
    n_with_energy: int  # of those, how many also have a raw energy (the fit's rows)
    references: dict[str, float] | None  # eV per atom of each element; None: unknown
    residual: float | None  # eV/atom, RMS; above REFERENCE_TOL: not per-element references

    @property
    def per_element(self) -> bool:
        return self.references is not None and self.residual <= REFERENCE_TOL

    def describe(self) -> str:
        if self.references is None:
            return "references unknown (no raw energy beside energy_corrected)"
        refs = ", ".join(f"{k} {v:.6g}" for k, v in self.references.items())
        if not self.per_element:
            return (f"energy - energy_corrected is not a sum of per-element energies "
                    f"(RMS residual {self.residual:.3g} eV/atom)")
        return f"references {refs} eV"

    def to_dict(self) -> dict:
        return {"source": self.source, "n_configs": self.n_configs,
                "n_with_energy": self.n_with_energy, "reference_energies": self.references,
                "residual_eV_per_atom": self.residual}


def force_consistent_energy(cols: Columns) -> np.ndarray:
    """Per-row energy (eV) the forces derive from (see ENERGY_RULE); NaN where none."""
    return np.where(np.isnan(cols.free_energy), cols.energy, cols.free_energy)


def composition(numbers: np.ndarray, offsets: np.ndarray, elements: np.ndarray) -> np.ndarray:
    """(rows, elements) atom counts; ``elements`` sorted atomic numbers."""
    n_rows = len(offsets) - 1
    out = np.zeros((n_rows, len(elements)))
    rows = np.repeat(np.arange(n_rows), np.diff(offsets))
    np.add.at(out, (rows, np.searchsorted(elements, numbers)), 1.0)
    return out


def fit_reference_energies(numbers: np.ndarray, offsets: np.ndarray, energies: np.ndarray
                           ) -> dict[str, float]:
    """Per-element energies (eV) that best explain ``energies`` (one per structure, atoms
    ``numbers[offsets[k]:offsets[k+1]]``) by composition alone: least squares, and
    minimum-norm where the compositions cannot separate two elements (e.g. a set that is
    all 1:1 TiAl)."""
    if len(offsets) < 2:
        return {}
    elements = np.unique(numbers)
    refs, *_ = np.linalg.lstsq(composition(numbers, offsets, elements), energies, rcond=None)
    return {chemical_symbols[z]: float(e) for z, e in zip(elements, refs, strict=True)}


def reference_offsets(numbers: np.ndarray, offsets: np.ndarray,
                      reference_energies: Mapping[str, float] | None) -> np.ndarray:
    """Per-structure sum of reference energies (eV); zeros when none are given."""
    n_rows = len(offsets) - 1
    if not reference_energies:
        return np.zeros(n_rows)
    unknown = set(reference_energies) - set(atomic_numbers)
    if unknown:
        raise TargetError(f"reference energies for unknown elements: {sorted(unknown)}")
    table = np.full(119, np.nan)
    for symbol, value in reference_energies.items():
        table[atomic_numbers[symbol]] = value
    per_atom = table[numbers]
    missing = sorted({chemical_symbols[z] for z in np.unique(numbers[np.isnan(per_atom)])})
    if missing:
        raise TargetError(f"no reference energy for {', '.join(missing)}: give one for every "
                          "element in the exported data, or none at all")
    return np.add.reduceat(per_atom, offsets[:-1]) if n_rows else np.zeros(0)


def _subset(cols: Columns, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numbers and offsets of the rows in ``mask``."""
    atoms = np.repeat(mask, np.diff(cols.offsets))
    sizes = np.diff(cols.offsets)[mask]
    return cols.numbers[atoms], np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _residual(numbers, offsets, differences, refs: Mapping[str, float]) -> float:
    """RMS per atom (eV) of ``differences`` minus the references' offsets."""
    n_atoms = np.diff(offsets)
    miss = differences - reference_offsets(numbers, offsets, refs)
    return float(np.sqrt(np.mean((miss / n_atoms) ** 2))) if len(miss) else 0.0


def implied_references(cols: Columns, sources: np.ndarray, mask: np.ndarray | None = None
                       ) -> list[SourceReferences]:
    """For each source with ``energy_corrected`` in the rows of ``mask`` (default: all),
    the per-element references that explain ``energy - energy_corrected``."""
    mask = np.ones(len(sources), bool) if mask is None else mask
    given = mask & ~np.isnan(cols.energy_corrected)
    raw = force_consistent_energy(cols)
    out = []
    for source in sorted(set(sources[given])):
        rows = given & (sources == source)
        both = rows & ~np.isnan(raw)
        refs = residual = None
        if both.any():
            numbers, offsets = _subset(cols, both)
            difference = raw[both] - cols.energy_corrected[both]
            refs = fit_reference_energies(numbers, offsets, difference)
            residual = _residual(numbers, offsets, difference, refs)
        out.append(SourceReferences(str(source), int(rows.sum()), int(both.sum()), refs,
                                    residual))
    return out


def fit_targets(cols: Columns, sources: np.ndarray,
                reference_energies: Mapping[str, float] | str | None,
                rereference: bool = False, allow_mixed: bool = False,
                baseline_energy: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Per-row fit target (eV) and a record of how it was made.

    ``reference_energies``: per-element eV, ``"auto"`` or None (zero), for the rows whose
    target is computed from the raw energy. ``baseline_energy`` (delta learning) is
    subtracted from every target. The record holds ``reference_energies`` (those of the
    computed rows, or the sources' where every target is theirs), counts and the
    sources' implied references."""
    raw = force_consistent_energy(cols)
    from_source = ~np.isnan(cols.energy_corrected) & (not rereference)
    computed = ~from_source
    no_energy = computed & np.isnan(raw)
    if no_energy.any():
        names = ", ".join(sorted(set(sources[no_energy])))
        raise TargetError(f"cannot re-reference {int(no_energy.sum())} configuration(s) that "
                          f"have no raw energy, only the source's energy_corrected ({names})")
    baseline_energy = np.zeros(len(raw)) if baseline_energy is None else baseline_energy
    groups = implied_references(cols, sources, from_source)
    numbers, offsets = _subset(cols, computed)
    if isinstance(reference_energies, str):  # "auto"
        reference_energies = _auto_references(cols, sources, raw, baseline_energy, computed,
                                              groups, allow_mixed)
    elif groups and computed.any() and not allow_mixed:
        _check_agree(cols, sources, raw, groups, reference_energies or {},
                     "the references given")
    if len(groups) > 1 and not allow_mixed:
        _check_agree(cols, sources, raw, groups, None, None)
    target = cols.energy_corrected.copy()
    target[computed] = (raw[computed] - baseline_energy[computed]
                        - reference_offsets(numbers, offsets, reference_energies))
    target[from_source] -= baseline_energy[from_source]
    if not computed.any() and groups:  # every target is a source's: record its references
        try:
            reference_energies = _common_references(cols, sources, raw, groups)
        except TargetError:  # unknown, or (allowed) different ones
            reference_energies = {}
    return target, {
        "reference_energies": dict(reference_energies or {}),
        "n_targets_from_source": int(from_source.sum()),
        "n_targets_from_energy": int(computed.sum()),
        "rereference": rereference,
        "source_references": [g.to_dict() for g in groups],
    }


def _auto_references(cols, sources, raw, baseline_energy, computed, groups, allow_mixed):
    """``auto``: the sources' own references where targets come from sources too, else a
    least-squares fit to the computed rows."""
    numbers, offsets = _subset(cols, computed)
    if not groups or allow_mixed:
        return fit_reference_energies(numbers, offsets, raw[computed] - baseline_energy[computed])
    if not computed.any():
        return {}
    refs = _common_references(cols, sources, raw, groups)
    # the computed rows' compositions must be combinations of the sources' own: else the
    # split of the references between elements (not unique there) would matter
    elements = np.unique(cols.numbers)
    known = np.concatenate([composition(*_subset(cols, _rows(cols, sources, g)), elements)
                            for g in groups])
    both = np.vstack([known, composition(numbers, offsets, elements)])
    if np.linalg.matrix_rank(both) > np.linalg.matrix_rank(known):
        raise TargetError(_mixing_message(
            groups, int(computed.sum()),
            "the compositions of the configurations without energy_corrected are not "
            "covered by the sources' (their references are not determined there)"))
    return refs


def _rows(cols: Columns, sources: np.ndarray, group: SourceReferences) -> np.ndarray:
    """The rows whose target is ``group``'s source's energy_corrected."""
    return (sources == group.source) & ~np.isnan(cols.energy_corrected)


def _common_references(cols, sources, raw, groups) -> dict[str, float]:
    """One set of references for all ``groups``; TargetError if they do not share one."""
    unknown = [g for g in groups if not g.per_element]
    if unknown:
        raise TargetError(_mixing_message(groups, None, "the references of "
                                          + ", ".join(g.source for g in unknown)
                                          + " are not known"))
    masks = [_rows(cols, sources, g) & ~np.isnan(raw) for g in groups]
    rows = np.logical_or.reduce(masks)
    numbers, offsets = _subset(cols, rows)
    difference = raw[rows] - cols.energy_corrected[rows]
    refs = fit_reference_energies(numbers, offsets, difference)
    if _residual(numbers, offsets, difference, refs) > REFERENCE_TOL:
        raise TargetError(_mixing_message(groups, None, "the sources use different "
                                          "reference energies"))
    return refs


def _check_agree(cols, sources, raw, groups, refs, what) -> None:
    """The groups share references (and they are ``refs`` where given)."""
    common = _common_references(cols, sources, raw, groups)
    if refs is None:
        return
    rows = np.logical_or.reduce([_rows(cols, sources, g) & ~np.isnan(raw) for g in groups])
    numbers, offsets = _subset(cols, rows)
    if _residual(numbers, offsets, raw[rows] - cols.energy_corrected[rows], refs) \
            > REFERENCE_TOL:
        shown = ", ".join(f"{k} {v:.6g}" for k, v in common.items())
        raise TargetError(_mixing_message(groups, None, f"{what} differ from the sources' "
                                          f"({shown} eV)"))


def _mixing_message(groups: list[SourceReferences], n_computed: int | None, why: str) -> str:
    lines = [f"refusing to mix fit targets made with different reference energies: {why}"]
    lines += [f"  {g.source}: {g.n_configs} configuration(s) with energy_corrected; "
              f"{g.describe()}" for g in groups]
    if n_computed:
        lines.append(f"  {n_computed} configuration(s) without energy_corrected: target = "
                     "energy - references")
    lines.append("Recompute every target from the raw energy (export.rereference: true, "
                 "--rereference), export the groups separately (filters, e.g. tags), or "
                 "accept the mix (export.allow_mixed_references: true).")
    return "\n".join(lines)


def source_references(store: StoreReader) -> list[dict]:
    """Per source file that gave energy_corrected: the reference energies it implies
    (``SourceReferences.to_dict`` plus a ``text`` line), as ``mlipstore info`` shows them."""
    table = store.dataset().to_table(filter=pc.field("energy_corrected").is_valid())
    sources = np.array(table.column("source_path").to_pylist(), dtype=object)
    return [{**g.to_dict(), "text": g.describe()}
            for g in implied_references(Columns.from_table(table), sources)]
