"""Baselines checked against independent implementations: pyace's ZBLCalculator, ASE's
LennardJones, a direct double loop, and finite differences for forces and stress."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
from ase.calculators.lj import LennardJones as AseLJ

from mlipstore.training.reference import COULOMB, ZBL, LennardJones


def tial(seed=0) -> Atoms:
    atoms = bulk("Al", "fcc", a=3.6, cubic=True).repeat((2, 1, 1))
    atoms.symbols[[1, 4, 6]] = "Ti"
    atoms.rattle(0.2, seed=seed)
    return atoms


LJ_PARAMS = {"Al": {"epsilon": 0.3, "sigma": 2.4}, "Ti": {"epsilon": 0.5, "sigma": 2.7}}


def test_zbl_matches_pyace_and_lammps_switch():
    from pyace import data_aug
    from pyace.data_aug import ZBLCalculator

    atoms = tial()
    atoms.positions[1] = atoms.positions[0] + [0.9, 0.3, 0.1]  # a close pair: ZBL matters
    ours, theirs = atoms.copy(), atoms.copy()
    ours.calc, theirs.calc = ZBL(1.0, 2.3), ZBLCalculator(cut_in=1.0, cutoff=2.3)
    scale = COULOMB / data_aug.K  # pyace has CODATA's e^2/(4 pi eps0), ours LAMMPS's
    assert abs(scale - 1) < 5e-8
    assert ours.get_potential_energy() == pytest.approx(
        scale * theirs.get_potential_energy(), rel=1e-10)
    assert np.allclose(ours.get_forces(), scale * theirs.get_forces(), rtol=1e-9, atol=1e-9)
    dimer = Atoms("AlTi", positions=[[0, 0, 0], [0, 0, 2.3 - 1e-9]])
    dimer.calc = ZBL(1.0, 2.3)
    assert abs(dimer.get_potential_energy()) < 1e-9  # switched to zero at the outer cutoff


@pytest.mark.parametrize("calc", [ZBL(0.8, 2.6), LennardJones(4.0, LJ_PARAMS)],
                         ids=["zbl", "lj"])
def test_forces_and_stress_are_derivatives_of_the_energy(calc):
    atoms = tial(seed=3)
    atoms.calc = calc
    assert np.allclose(atoms.get_forces(), calculate_numerical_forces(atoms, eps=1e-5),
                       atol=1e-5)
    assert np.allclose(atoms.get_stress(), calculate_numerical_stress(atoms, eps=1e-6),
                       atol=1e-6)
    assert np.allclose(atoms.get_forces().sum(axis=0), 0, atol=1e-10)


def test_lj_single_element_equals_ase():
    atoms = bulk("Al", "fcc", a=4.0).repeat((2, 2, 2))
    atoms.rattle(0.1, seed=1)
    ours, theirs = atoms.copy(), atoms.copy()
    ours.calc = LennardJones(5.0, {"Al": {"epsilon": 0.2, "sigma": 2.5}})
    theirs.calc = AseLJ(epsilon=0.2, sigma=2.5, rc=5.0)  # ASE also shifts E(rc) to 0
    assert ours.get_potential_energy() == pytest.approx(theirs.get_potential_energy(),
                                                        rel=1e-10)
    assert np.allclose(ours.get_forces(), theirs.get_forces(), atol=1e-10)
    assert np.allclose(ours.get_stress(), theirs.get_stress(), atol=1e-10)


def test_lj_mixing_against_a_double_loop():
    atoms = tial(seed=5)
    atoms.pbc = False
    lj = LennardJones(4.5, LJ_PARAMS, pairs={"Ti-Al": {"epsilon": 0.1, "sigma": 2.2}})
    atoms.calc = lj
    energy = 0.0
    for i in range(len(atoms)):
        for j in range(i + 1, len(atoms)):
            r = atoms.get_distance(i, j)
            a, b = sorted((atoms[i].symbol, atoms[j].symbol))
            if a != b:
                eps, sig = 0.1, 2.2
            else:
                eps, sig = LJ_PARAMS[a]["epsilon"], LJ_PARAMS[a]["sigma"]
            if r < 4.5:
                energy += 4 * eps * ((sig / r) ** 12 - (sig / r) ** 6
                                     - (sig / 4.5) ** 12 + (sig / 4.5) ** 6)
    assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-12)
    mixed = LennardJones(4.5, LJ_PARAMS)
    assert mixed.pair_parameters("Al", "Ti") == pytest.approx((np.sqrt(0.15), 2.55))
