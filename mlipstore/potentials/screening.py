"""Extrapolation screening: which candidate structures a potential cannot handle.

The extrapolation grade gamma of an atom is how far its B-projection lies outside the
potential's active set (``.asi``, from ``pace_activeset`` on the training data): gamma <= 1
interpolates, gamma > 1 extrapolates. A structure's grade is its largest atomic gamma.
The most extrapolative candidates go to DFT next; ``pace_select`` can thin them to a
D-optimal subset so the DFT budget is not spent on near-duplicates.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io
import numpy as np
import pandas as pd

from .._io import atomic_write
from ..training import pacemaker
from .registry import Potential

DEFAULT_GAMMA_THRESHOLD = 1.0


@dataclass
class Candidate:
    atoms: ase.Atoms
    source: str
    frame: int
    gamma: float = float("nan")  # largest atomic extrapolation grade


def read_candidates(paths: Iterable[str | Path]) -> list[Candidate]:
    """Every frame of every file (anything ASE reads; labels are not needed)."""
    out = []
    for path in paths:
        for index, atoms in enumerate(ase.io.iread(str(path), index=":")):
            out.append(Candidate(atoms, str(path), index))
    return out


def extrapolation_grades(potential: Potential, structures: Sequence[ase.Atoms]) -> np.ndarray:
    """Largest atomic gamma of each structure, from the potential's B-basis and active set."""
    calc = potential.grading_calculator()
    grades = []
    for atoms in structures:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        grades.append(float(np.max(calc.results["gamma"])))
    return np.array(grades)


@dataclass
class Screening:
    """``above``: the candidates with gamma above the threshold, most extrapolative first;
    ``chosen``: those to compute (all of ``above``, or the D-optimal subset of them)."""

    above: list[Candidate]
    chosen: list[Candidate]


def screen(potential: Potential, candidates: list[Candidate],
           threshold: float = DEFAULT_GAMMA_THRESHOLD, d_optimal: int | None = None
           ) -> Screening:
    """Grade every candidate (``Candidate.gamma``) and choose the ones above ``threshold``;
    with ``d_optimal``, at most that many, chosen by pace_select against the active set
    (it keeps only structures that add to the active set, so possibly fewer)."""
    grades = extrapolation_grades(potential, [c.atoms for c in candidates])
    for candidate, gamma in zip(candidates, grades, strict=True):
        candidate.gamma = gamma
    above = sorted((c for c in candidates if c.gamma > threshold), key=lambda c: -c.gamma)
    chosen = above
    if d_optimal is not None and len(above) > d_optimal:
        keep = pace_select(potential, [c.atoms for c in above], d_optimal)
        chosen = [c for i, c in enumerate(above) if i in keep]
    return Screening(above, chosen)


def pace_select(potential: Potential, structures: list[ase.Atoms], n: int) -> set[int]:
    """Indices of at most ``n`` of ``structures``, chosen D-optimally against the
    potential's active set by pace_select (only those that add to it)."""
    pool = pd.DataFrame({"name": [str(i) for i in range(len(structures))],
                         "ase_atoms": structures})
    return {int(name) for name in pacemaker.pace_select(pool, potential.basis_yaml, n,
                                                         potential.active_set)}


def write_candidates(chosen: list[Candidate], path: str | Path) -> None:
    """extxyz with each structure's gamma, source file and frame in its info."""
    frames = []
    for c in chosen:
        atoms = c.atoms.copy()
        atoms.calc = None
        atoms.info.update(gamma=c.gamma, source=c.source, source_frame=c.frame)
        frames.append(atoms)
    with atomic_write(path) as fh:
        ase.io.write(fh, frames, format="extxyz")
