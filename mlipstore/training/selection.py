"""Choosing which structures to train on. A method implements only ``select``.

As in IPSuite's selection nodes, a selection is a list of configuration ids, never a
copy of the data; the training set is built from the pool and the ids.
"""

from __future__ import annotations

import tempfile
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..params import AceBasisConfig
from .pacemaker import pace_select, potential_section


class Selection(ABC):
    """Pick at most ``n`` rows of a pacemaker DataFrame; return their positions."""

    @abstractmethod
    def select(self, pool: pd.DataFrame, n: int) -> list[int]: ...

    def select_ids(self, pool: pd.DataFrame, n: int) -> list[str]:
        """The ids (``name`` column) of the selected structures, in pool order."""
        return [pool["name"].iloc[i] for i in sorted(self.select(pool, n))]


class AllStructures(Selection):
    """Method ``none``: everything in the pool is trained on."""

    def select(self, pool: pd.DataFrame, n: int) -> list[int]:
        return list(range(len(pool)))


class RandomSelection(Selection):
    """Method ``random``: a uniform sample, reproducible through the seed."""

    def __init__(self, seed: int = 42) -> None:
        self.seed = seed

    def select(self, pool: pd.DataFrame, n: int) -> list[int]:
        rng = np.random.default_rng(self.seed)
        return sorted(rng.choice(len(pool), size=min(n, len(pool)), replace=False).tolist())


class MaxVolSelection(Selection):
    """Method ``maxvol``: D-optimal structures by ``pace_select`` (MaxVol on B-projections).

    With ``potential`` (a fitted ``.yaml`` B-basis, e.g. the previous generation) its basis
    is used; without, an unfitted basis built from ``basis`` is used, since B-projections
    do not depend on fitted coefficients. MaxVol picks at most one atomic environment per
    basis function and needs more environments than functions, so the unfitted basis is
    sized to the pool: below the atom count of the rarest element, at most ``max_functions``.
    ``batch_size`` (structures) makes pace_select work through a big pool in batches, so
    its memory is bounded by the batch instead of the pool; the unfitted basis is then
    sized to the rarest element of the poorest batch.
    """

    def __init__(self, basis: AceBasisConfig | None = None, potential: Path | None = None,
                 max_functions: int = 1000, batch_size: int | None = None) -> None:
        if basis is None and potential is None:
            raise ValueError("maxvol needs an ACE basis or a fitted potential")
        self.basis, self.potential, self.max_functions = basis, potential, max_functions
        self.batch_size = batch_size

    def selection_basis(self, pool: pd.DataFrame, path: Path) -> Path:
        """Write the unfitted B-basis sized to ``pool``; returns its path."""
        from pyace.multispecies_basisextension import create_multispecies_basis_config

        structures = list(pool["ase_atoms"])
        elements = sorted({s for atoms in structures for s in atoms.get_chemical_symbols()})
        # each element owns unary + cross-element functions: keep their sum below its atoms
        # in the pool, or in every batch pace_select takes in turn
        step = self.batch_size or len(structures)
        rarest = min(min(Counter(s for atoms in structures[i:i + step]
                                 for s in atoms.get_chemical_symbols()).values())
                     for i in range(0, len(structures), step))
        per_element = min(self.max_functions, int(0.8 * rarest))
        basis = self.basis.model_copy(update={"number_of_functions_per_element":
                                              max(per_element, 1)})
        create_multispecies_basis_config(potential_section(basis, elements)).save(str(path))
        return path

    def select(self, pool: pd.DataFrame, n: int) -> list[int]:
        if n >= len(pool):  # nothing to choose: the whole pool is the most informative set
            return list(range(len(pool)))
        with tempfile.TemporaryDirectory(prefix="mlipstore-select-") as tmp:
            basis = self.potential or self.selection_basis(pool, Path(tmp) / "basis.yaml")
            chosen = pace_select(
                pool[["name", "ase_atoms", "energy", "forces", "energy_corrected"]], basis, n,
                batch_size=self.batch_size)
        return [i for i, name in enumerate(pool["name"]) if name in chosen]


def make_selection(method: str, basis: AceBasisConfig | None = None, seed: int = 42,
                   potential: Path | None = None, max_functions: int = 1000,
                   batch_size: int | None = None) -> Selection:
    """The Selection for a method name of params.yaml (``maxvol``, ``random``, ``none``)."""
    if method == "maxvol":
        return MaxVolSelection(basis, potential, max_functions, batch_size)
    if method == "random":
        return RandomSelection(seed)
    if method == "none":
        return AllStructures()
    raise ValueError(f"unknown selection method {method!r}: use maxvol, random or none")
