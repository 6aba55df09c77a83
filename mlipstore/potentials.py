"""The registry of fitted potentials: ``models/potential_gen_NN.*`` with their lineage.

Each generation NN has ``.yace`` (for LAMMPS and ASE), ``.yaml`` (pacemaker's B-basis),
``.asi`` (active set, for extrapolation grades), ``.log`` (pacemaker's output),
``.lammps`` (the pair_style lines of the deployed model) and ``.json`` (lineage: data,
ids, params, baseline, input.yaml, git commit, versions, metrics). A generation exists
once its ``.json`` is in place, which is written last.

The deployed model is ACE plus the baseline it was trained on (delta learning), rebuilt
from the lineage, so training and deployment cannot disagree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ase import Atoms

from .reference import PairPotential, from_description, lammps_input

MODELS_DIR = Path("models")
NAME_RE = re.compile(r"^potential_gen_(\d+)\.json$")
SUFFIXES = (".yace", ".yaml", ".asi", ".log")  # copied from the fit; .lammps is written


class RegistryError(LookupError):
    """No such potential; the message lists what exists."""


def generation_name(generation: int) -> str:
    return f"potential_gen_{generation:02d}"


@dataclass
class Potential:
    """A registered potential: ``path`` is its .yace, ``meta`` its lineage record."""

    path: Path
    meta: dict

    @property
    def generation(self) -> int:
        return int(self.meta["generation"])

    @property
    def basis_yaml(self) -> Path:
        return self.path.with_suffix(".yaml")

    @property
    def active_set(self) -> Path:
        return self.path.with_suffix(".asi")

    @property
    def baseline(self) -> PairPotential | None:
        """The reference potential subtracted in training (None if none was)."""
        return from_description(self.meta.get("baseline"))

    def calculator(self):
        """The deployed model as one ASE calculator: ACE (pyace's PyACECalculator), plus
        the baseline when it was trained by delta learning."""
        from ase.calculators.mixing import SumCalculator
        from pyace import PyACECalculator

        ace = PyACECalculator(str(self.path))
        baseline = self.baseline
        return ace if baseline is None else SumCalculator([ace, baseline])

    def dimer_energies(self, a: str, b: str, distances: np.ndarray) -> np.ndarray:
        """Energy (eV) of an isolated a-b dimer at each distance (Angstrom)."""
        calc = self.calculator()
        energies = []
        for r in distances:
            dimer = Atoms([a, b], positions=[[0, 0, 0], [0, 0, r]], pbc=False)
            dimer.calc = calc
            energies.append(dimer.get_potential_energy())
        return np.array(energies)

    @classmethod
    def load(cls, which: int | str | None = None, models_dir: str | Path = MODELS_DIR
             ) -> Potential:
        """A generation by number (``2``, ``"02"``, ``"gen_02"``), name or path; the
        latest when ``which`` is None."""
        potentials = list_potentials(models_dir)
        if not potentials:
            raise RegistryError(f"no potentials in {models_dir} yet (run 'dvc repro')")
        if which is None:
            return potentials[-1]
        text = str(which)
        if text.endswith((".yace", ".json", ".yaml")) and Path(text).exists():
            return _read(Path(text).with_suffix(".json"))
        match = re.search(r"(\d+)$", text)
        for potential in potentials:
            if match and potential.generation == int(match[1]):
                return potential
        names = ", ".join(p.path.stem for p in potentials)
        raise RegistryError(f"no potential {which!r} in {models_dir}; there are: {names}")


def _read(json_path: Path) -> Potential:
    return Potential(json_path.with_suffix(".yace"), json.loads(json_path.read_text()))


def list_potentials(models_dir: str | Path = MODELS_DIR) -> list[Potential]:
    """All registered generations, oldest first."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    found = sorted((int(m[1]), p) for p in models_dir.iterdir() if (m := NAME_RE.match(p.name)))
    return [_read(p) for _, p in found]


def next_generation(models_dir: str | Path = MODELS_DIR) -> int:
    potentials = list_potentials(models_dir)
    return potentials[-1].generation + 1 if potentials else 1


def register(files: dict[str, Path], lineage: dict, models_dir: str | Path = MODELS_DIR
             ) -> Potential:
    """Copy a fit's files (keys: the SUFFIXES) into the registry as the next generation.

    Each file is copied under a temporary name and renamed; the lineage ``.json`` comes
    last, so a crash midway registers nothing.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    generation = next_generation(models_dir)
    stem = generation_name(generation)
    lineage = {"generation": generation, "name": stem, **lineage}
    for suffix in SUFFIXES:
        _atomic_copy(files[suffix], models_dir / f"{stem}{suffix}")
    lammps = lammps_input(f"{stem}.yace", lineage["elements"],
                          from_description(lineage.get("baseline")),
                          note=f"{stem}: the model as trained (mlipstore)")
    tmp = models_dir / f".{stem}.lammps.tmp"
    tmp.write_text(lammps)
    os.replace(tmp, models_dir / f"{stem}.lammps")
    tmp = models_dir / f".{stem}.json.tmp"
    tmp.write_text(json.dumps(lineage, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, models_dir / f"{stem}.json")
    return _read(models_dir / f"{stem}.json")


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)
