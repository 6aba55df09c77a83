"""Realistic synthetic DFT training data for the benchmark, written as ASE writes extxyz.

Each configuration is a 64-atom fcc supercell of a unary, binary or ternary alloy of Al,
Cu, Ni, Ti and Mg (Vegard lattice constant, strained by up to 3%, rattled by 0.1 Å),
labelled by a harmonic model with noise: energy (eV) = sum of per-element energies +
elastic and displacement terms, forces (eV/Å) = -k u + noise, stress (eV/Å³) from the
strain, and a free energy 1-10 meV below the energy, as VASP reports with smearing. The
values span the ranges of real data; what matters for the benchmark is their size, their
precision (%16.8f per-atom columns, repr() for the rest, as ASE writes) and the mix of
chemical systems that filters select on.

The writer produces ase.io.write's bytes (tests/test_bench.py checks it) but is fast
enough for 10^6 configurations.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from ase.build import bulk

ELEMENTS = ["Al", "Cu", "Ni", "Ti", "Mg"]
LATTICE = {"Al": 4.05, "Cu": 3.61, "Ni": 3.52, "Ti": 4.12, "Mg": 4.52}  # fcc, Å
ENERGY = {"Al": -3.74, "Cu": -3.72, "Ni": -5.57, "Ti": -7.89, "Mg": -1.54}  # eV/atom
SYSTEMS = [c for k in (1, 2, 3) for c in itertools.combinations(ELEMENTS, k)]
N_ATOMS = 64
_SITES = bulk("Al", "fcc", a=1.0, cubic=True).repeat((2, 2, 4)).positions  # in units of a
_LINE = "%-2s" + " %16.8f" * 6 + "\n"


def configurations(n: int, seed: int = 0) -> Iterator[dict]:
    """``n`` labelled configurations as dicts (symbols, positions, cell, energy,
    free_energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield _one(rng, SYSTEMS[rng.integers(len(SYSTEMS))])


def _one(rng: np.random.Generator, system: tuple[str, ...]) -> dict:
    symbols = np.array(system)[rng.integers(len(system), size=N_ATOMS)]
    a0 = np.mean([LATTICE[s] for s in symbols])
    strain = rng.uniform(-0.03, 0.03, size=(3, 3))
    strain = (strain + strain.T) / 2
    cell = (np.eye(3) + strain) @ np.diag([2 * a0, 2 * a0, 4 * a0])
    displacement = rng.normal(0.0, 0.1, size=(N_ATOMS, 3))
    positions = _SITES * a0 @ (np.eye(3) + strain) + displacement
    k = 2.0  # eV/Å², harmonic stiffness
    forces = -k * displacement + rng.normal(0.0, 0.05, size=(N_ATOMS, 3))
    volume = abs(np.linalg.det(cell))
    energy = (sum(ENERGY[s] for s in symbols) + 0.5 * k * (displacement**2).sum()
              + 5.0 * volume * (strain**2).sum() + rng.normal(0.0, 0.05))
    stress = -10.0 * strain[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]] * 1e-2
    stress = stress + rng.normal(0.0, 1e-4, size=6)
    return {"symbols": symbols, "positions": positions, "cell": cell, "energy": float(energy),
            "free_energy": float(energy - rng.uniform(0.001, 0.01)), "forces": forces,
            "stress": stress}


def extxyz_frame(c: dict) -> str:
    """One configuration in extxyz, byte for byte as ``ase.io.write`` writes it."""
    xx, yy, zz, yz, xz, xy = c["stress"]
    full = (xx, xy, xz, xy, yy, yz, xz, yz, zz)
    header = (f'Lattice="{" ".join(str(x) for x in c["cell"].ravel())}" '
              "Properties=species:S:1:pos:R:3:forces:R:3 "
              f'energy={c["energy"]!r} free_energy={c["free_energy"]!r} '
              f'stress="{" ".join(str(x) for x in full)}" pbc="T T T"')
    rows = np.hstack([c["positions"], c["forces"]]).tolist()
    body = "".join(_LINE % (s, *row) for s, row in zip(c["symbols"], rows, strict=True))
    return f"{N_ATOMS}\n{header}\n{body}"


def write_extxyz(path: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` configurations to ``path`` (extxyz)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        for config in configurations(n, seed):
            fh.write(extxyz_frame(config))
    return path
