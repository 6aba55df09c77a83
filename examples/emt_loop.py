"""Active learning on an EMT-labelled Al-Ni alloy: the loop from 20 seed structures.

ASE's EMT stands in for DFT (it labels in milliseconds), so the whole loop runs on a
laptop: a project is made at ROOT with 20 small rattled fcc Al-Ni cells as seed data and
an independent holdout set drawn from high-temperature EMT molecular dynamics of bigger
cells, then ``mlipstore loop`` explores, labels with EMT and retrains for N generations.

    python examples/emt_loop.py ROOT [--generations 4]
    cd ROOT && dvc metrics diff gen-01 gen-04    # holdout errors, extrapolation, stable time

explore/history.png shows the generations side by side.
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

import ase
import ase.io
import numpy as np
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta

ELEMENTS = ("Al", "Ni")
# a small basis and short fits: each generation trains in about a minute on two cores
SETTINGS = {
    "select.method": "none",
    "split.test_fraction": 0.1,
    "training.ace_basis_config.number_of_functions_per_element": 40,
    "training.ace_basis_config.nradmax_by_orders": [8, 4, 3],
    "training.ace_basis_config.lmax_by_orders": [0, 2, 2],
    "training.ace_basis_config.r_cut": 5.0,
    "training.max_epochs": 200,
    "explore.temperatures_K": [600.0, 1200.0],
    "explore.steps": 500,
    "explore.timestep_fs": 2.0,
    "explore.trajectories": 4,
    "explore.gamma_lower": 1.5,
    "explore.gamma_upper": 20.0,
    "explore.max_candidates": 20,
    "explore.collect_every_steps": 10,
    "loop.oracle": "ase.calculators.emt:EMT",
    "loop.holdout": "holdout.extxyz",
}


def _alloy(repeat: tuple[int, int, int], rng: np.random.Generator) -> ase.Atoms:
    """A random fcc Al-Ni cell at Vegard's lattice constant (Al 4.05 Å, Ni 3.52 Å)."""
    n = 4 * int(np.prod(repeat))
    ni = rng.random(n) < rng.uniform(0.2, 0.8)
    a = 4.05 + (3.52 - 4.05) * ni.mean()
    atoms = bulk("Al", "fcc", a=a, cubic=True).repeat(repeat)
    atoms.symbols[ni] = "Ni"
    return atoms


def _labelled(atoms: ase.Atoms) -> ase.Atoms:
    atoms.calc = EMT()
    atoms.get_potential_energy()
    atoms.get_stress()
    return atoms


def seed_structures(n: int = 20, seed: int = 1) -> list[ase.Atoms]:
    """Small (8-atom) rattled and strained cells near equilibrium, EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        atoms = _alloy((2, 1, 1), rng)
        atoms.set_cell(atoms.cell * rng.uniform(0.98, 1.02), scale_atoms=True)
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        frames.append(_labelled(atoms))
    return frames


def holdout_structures(n: int = 30, seed: int = 2, temperature_K: float = 1200.0
                       ) -> list[ase.Atoms]:
    """Snapshots of EMT Langevin MD of 32-atom cells at ``temperature_K`` (none of them
    is ever trained on), EMT-labelled."""
    rng = np.random.default_rng(seed)
    frames = []
    runs = 3
    for _ in range(runs):
        atoms = _alloy((2, 2, 2), rng)
        atoms.calc = EMT()
        thermalize_momenta(atoms, temperature_K, rng=rng)
        dyn = Langevin(atoms, 2 * ase.units.fs, temperature_K=temperature_K,
                       friction=0.02 / ase.units.fs, fixcm=False, rng=rng)
        dyn.run(100)
        for _ in range(n // runs):
            dyn.run(20)
            snapshot = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=True)
            frames.append(_labelled(snapshot))
    return frames


def make_project(root: Path, settings: dict | None = None, env: dict | None = None) -> Path:
    """``mlipstore init`` a project at ``root`` with the seed data in its inbox, the
    holdout set beside, and SETTINGS (updated by ``settings``) in params.yaml; commands
    run with ``env`` (default: this process's environment)."""
    subprocess.run(["mlipstore", "init", str(root)], check=True, env=env)
    ase.io.write(root / "data" / "raw" / "seed.extxyz", seed_structures(), format="extxyz")
    ase.io.write(root / "holdout.extxyz", holdout_structures(), format="extxyz")
    doc = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in {**SETTINGS, **(settings or {})}.items():
        node = doc
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    subprocess.run(["git", "add", "-A"], cwd=root, check=True, env=env)
    subprocess.run(["git", "commit", "-qm", "EMT Al-Ni loop: seed data, holdout, params"],
                   cwd=root, check=False, env=env)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--generations", type=int, default=4)
    args = parser.parse_args()
    make_project(args.root)
    subprocess.run(["mlipstore", "loop", "--generations", str(args.generations)],
                   cwd=args.root, check=True)


if __name__ == "__main__":
    main()
