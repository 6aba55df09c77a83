"""The registry of fitted potentials: ``models/potential_gen_NN.*`` with their lineage.

A generation is a training set: a fit on data (the exported pool and test ids, the
lineage's ``dataset_sha256``) other than the newest generation's gets the next number;
a retrain on the newest generation's data (other hyperparameters, ``dvc exp run``)
replaces that generation's files in the workspace, while the earlier fits stay in DVC's
cache, git history and experiments.

Each generation NN has ``.yace`` (for LAMMPS and ASE), ``.yaml`` (pacemaker's B-basis),
``.asi`` (active set, for extrapolation grades), ``.log`` (pacemaker's output),
``.lammps`` (the pair_style lines of the deployed model) and ``.json`` (lineage: data,
ids, params, baseline, input.yaml, git commit, versions, metrics). A generation exists
once its ``.json`` is in place, which is written last.

The deployed model is the reference energies plus ACE plus the baseline it was trained on
(delta learning), rebuilt from the lineage, so training and deployment cannot disagree:
the fit target is energy minus per-element reference energies, so the ``.yace`` carries
them as its per-element constant ``E0``, which pyace's ASE calculator and LAMMPS's
``pair_style pace`` add for every atom: both give DFT's total energy.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms

from .._io import atomic_write, write_json
from ..errors import RegistryError
from ..layout import Layout
from ..training.reference import PairPotential, from_description, lammps_input

MODELS_DIR = Layout().models  # models, relative to the working directory
NAME_RE = re.compile(r"^potential_gen_(\d+)\.json$")
SUFFIXES = (".yace", ".yaml", ".asi", ".log")  # copied from the fit; .lammps is written


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

    def calculator(self, ace=None):
        """The deployed model as one ASE calculator: ACE (pyace's PyACECalculator on the
        .yace, or ``ace``), plus the baseline when it was trained by delta learning."""
        from ase.calculators.mixing import SumCalculator
        from pyace import PyACECalculator

        ace = ace or PyACECalculator(str(self.path))
        baseline = self.baseline
        return ace if baseline is None else SumCalculator([ace, baseline])

    def grading_calculator(self):
        """pyace's calculator on the B-basis (.yaml) with the active set (.asi): after each
        calculation ``results["gamma"]`` holds every atom's extrapolation grade. Its
        energies lack the reference energies the .yace carries; its forces are ACE's."""
        from pyace import PyACECalculator

        calc = PyACECalculator(str(self.basis_yaml))
        calc.set_active_set(str(self.active_set))
        return calc

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


def generation_for(dataset_sha256: str | None, models_dir: str | Path = MODELS_DIR) -> int:
    """The generation a fit on this dataset registers as: the newest one if it was
    trained on the same data (a retrain replaces it), else the next number."""
    potentials = list_potentials(models_dir)
    if not potentials:
        return 1
    newest = potentials[-1]
    same = dataset_sha256 is not None and newest.meta.get("dataset_sha256") == dataset_sha256
    return newest.generation if same else newest.generation + 1


def next_generation(models_dir: str | Path = MODELS_DIR) -> int:
    """The number the next new training set gets."""
    potentials = list_potentials(models_dir)
    return potentials[-1].generation + 1 if potentials else 1


def parent_for(dataset_sha256: str, models_dir: str | Path = MODELS_DIR) -> Potential | None:
    """The generation a fit on this dataset warm-starts from (``initial_potential:
    previous``): the newest one trained on other data, never the one a retrain on the
    same data replaces, so a retrain starts from the same parent as the fit it replaces."""
    for potential in reversed(list_potentials(models_dir)):
        if potential.meta.get("dataset_sha256") != dataset_sha256:
            return potential
    return None


def with_reference_energies(yace: str, reference_energies: dict[str, float]) -> str:
    """A ``.yace`` text whose ``E0`` (eV per atom of each element, in the order of its
    ``elements``) holds ``reference_energies`` (0 for an element without one)."""
    head, sep, rest = yace.partition("\n")
    elements = yaml.safe_load(head)["elements"]
    e0 = "E0: [" + ", ".join(repr(float(reference_energies.get(e, 0.0))) for e in elements) + "]"
    if rest.startswith("E0:"):
        rest = rest.split("\n", 1)[1]
    return f"{head}{sep}{e0}\n{rest}"


def register(files: dict[str, Path], lineage: dict, models_dir: str | Path = MODELS_DIR
             ) -> Potential:
    """Copy a fit's files (keys: the SUFFIXES) into the registry as the generation of its
    ``lineage["dataset_sha256"]`` (see generation_for).

    All files are first copied under temporary names; a replaced generation's ``.json``
    is removed before its files are renamed and the new ``.json`` comes last, so a crash
    midway never leaves a lineage beside files of another fit.
    """
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    generation = generation_for(lineage.get("dataset_sha256"), models_dir)
    stem = generation_name(generation)
    lineage = {"generation": generation, "name": stem, **lineage}
    lammps = lammps_input(f"{stem}.yace", lineage["elements"],
                          from_description(lineage.get("baseline")),
                          note=f"{stem}: the model as trained (mlipstore)")
    # every file is written aside first and renamed only once all are written; the lineage
    # .json, the registry's mark of a complete generation, comes last
    (models_dir / f"{stem}.json").unlink(missing_ok=True)
    with contextlib.ExitStack() as files_written:
        for suffix in SUFFIXES:
            text = Path(files[suffix]).read_bytes()
            if suffix == ".yace":
                text = with_reference_energies(text.decode(),
                                               lineage.get("reference_energies") or {}).encode()
            files_written.enter_context(atomic_write(models_dir / f"{stem}{suffix}", "wb")
                                        ).write(text)
        files_written.enter_context(atomic_write(models_dir / f"{stem}.lammps")).write(lammps)
    write_json(models_dir / f"{stem}.json", lineage)
    return _read(models_dir / f"{stem}.json")
