"""Delta learning: targets are DFT minus the baseline, and the deployed model adds the very
same baseline back (ASE calculator and LAMMPS lines, both built from the lineage)."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
from ase.calculators.lj import LennardJones as AseLJ

from helpers import emt_frames
from mlipstore.params import Params, TrainingConfig
from mlipstore.pipeline.training_data import TrainingData
from mlipstore.potentials.registry import Potential, register
from mlipstore.store.store import Store
from mlipstore.training.export import pacemaker_frame
from mlipstore.training.pacemaker import PacemakerRunner
from mlipstore.training.reference import COULOMB, ZBL, LennardJones

LJ_NI = {"Ni": {"epsilon": 0.4, "sigma": 2.3}}


@pytest.fixture
def ni_store(tmp_path):
    from mlipstore import ingest

    frames = emt_frames(4, seed=2, symbols="Ni")  # one element, as ASE LJ has
    path = tmp_path / "ni.traj"  # binary: the store holds EMT's values exactly
    ase.io.write(path, frames)
    store = Store(tmp_path / "data" / "store", create=True)  # a project layout
    ingest([path], store)
    return store, frames


@pytest.mark.parametrize("name, baseline, independent", [
    ("lj", LennardJones(4.0, LJ_NI), lambda: AseLJ(epsilon=0.4, sigma=2.3, rc=4.0)),
    ("zbl", ZBL(1.0, 3.0), None),
])
def test_targets_are_dft_minus_an_independent_baseline(ni_store, name, baseline, independent):
    from pyace import data_aug
    from pyace.data_aug import ZBLCalculator

    store, frames = ni_store
    df = pacemaker_frame(store.scan(), None, baseline)
    assert df.attrs["mlipstore"]["baseline"]["type"] == name.upper()
    for atoms, (_, row) in zip(frames, df.iterrows(), strict=True):
        ref = atoms.copy()
        ref.calc = independent() if independent else ZBLCalculator(cut_in=1.0, cutoff=3.0)
        # pyace's ZBL has CODATA's e^2/(4 pi eps0), the baseline LAMMPS's (2.4e-8 lower)
        scale = 1.0 if independent else COULOMB / data_aug.K
        e_b, f_b = scale * ref.get_potential_energy(), scale * ref.get_forces()
        assert abs(e_b) > 1e-3  # the baseline really acts on these structures
        dft_e = atoms.calc.results["free_energy"]
        assert row["energy"] == dft_e
        assert row["energy_corrected"] == pytest.approx(dft_e - e_b, abs=1e-9)
        assert np.allclose(row["forces"], atoms.get_forces() - f_b, atol=1e-9)
        if independent:  # ASE's LJ has stress; pyace's ZBL has none (checked numerically
            # in test_reference)
            assert np.allclose(row["stress"], atoms.get_stress() - ref.get_stress(),
                               atol=1e-10)


@pytest.mark.parametrize("reference, zbl_mode, repulsion", [
    ("none", "core_repulsion", None), ("ZBL", "core_repulsion", "auto"),
    ("ZBL", "delta", None), ("LJ", "core_repulsion", None),
])
def test_reference_in_input_yaml(tmp_path, reference, zbl_mode, repulsion):
    config = TrainingConfig.model_validate({"reference_potential": reference,
                                            "zbl": {"mode": zbl_mode},
                                            "lj": {"elements": LJ_NI}})
    doc = PacemakerRunner(config).generate_input_yaml(tmp_path / "d.pckl.gzip", ["Ni"])
    assert doc["fit"].get("repulsion") == repulsion
    expects_baseline = reference == "LJ" or (reference, zbl_mode) == ("ZBL", "delta")
    assert (config.baseline() is not None) == expects_baseline


def test_lj_needs_parameters_for_every_element(tmp_path, ni_store):
    store, _ = ni_store
    params = Params.model_validate({"training": {
        "reference_potential": "LJ", "lj": {"elements": {"Al": {"epsilon": 1, "sigma": 2}}}}})
    builder = TrainingData(tmp_path, params)
    with pytest.raises(ValueError, match="Lennard-Jones parameters missing for Ni"):
        builder.export_for_pacemaker()


def _unfitted_yace(tmp_path, elements):
    import subprocess

    from pyace.multispecies_basisextension import create_multispecies_basis_config

    from mlipstore.params import AceBasisConfig
    from mlipstore.training.pacemaker import potential_section, tool

    yaml_path = tmp_path / "fit" / "output_potential.yaml"
    yaml_path.parent.mkdir()
    create_multispecies_basis_config(potential_section(AceBasisConfig(), elements)).save(
        str(yaml_path))
    subprocess.run([tool("pace_yaml2yace"), str(yaml_path), "-o",
                    str(yaml_path.with_suffix(".yace"))], check=True, capture_output=True)
    for suffix in (".asi", ".log"):
        yaml_path.with_suffix(suffix).write_text("")
    return {s: yaml_path.with_suffix(s) for s in (".yace", ".yaml", ".asi", ".log")}


def test_deployed_model_is_ace_plus_the_recorded_baseline(tmp_path):
    lj = LennardJones(5.0, {"Al": {"epsilon": 0.1, "sigma": 2.6},
                            "Ti": {"epsilon": 0.2, "sigma": 2.8}},
                      pairs={"Al-Ti": {"epsilon": 0.15, "sigma": 2.5}})
    files = _unfitted_yace(tmp_path, ["Al", "Ti"])
    potential = register(files, {"elements": ["Al", "Ti"], "baseline": lj.describe()},
                         tmp_path / "models")
    atoms = emt_frames(1, symbols="Al")[0]
    atoms.symbols[:3] = "Ti"
    atoms.calc = potential.calculator()
    full = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    from pyace import PyACECalculator

    parts = []
    for calc in (PyACECalculator(str(potential.path)), lj):
        copy = atoms.copy()
        copy.calc = calc
        parts.append((copy.get_potential_energy(), copy.get_forces(), copy.get_stress()))
    assert full[0] == pytest.approx(parts[0][0] + parts[1][0], abs=1e-9)
    assert np.allclose(full[1], parts[0][1] + parts[1][1], atol=1e-9)
    assert np.allclose(full[2], parts[0][2] + parts[1][2], atol=1e-9)

    # the LAMMPS lines name the lineage's parameters
    lines = potential.path.with_suffix(".lammps").read_text().splitlines()
    assert "pair_style hybrid/overlay pace lj/cut 5" in lines
    assert "pair_coeff * * pace potential_gen_01.yace Al Ti" in lines
    assert "pair_modify pair lj/cut shift yes" in lines
    meta = Potential.load(1, tmp_path / "models").meta["baseline"]
    rebuilt = LennardJones(meta["cutoff"], meta["elements"], meta["pairs"])
    coeffs = {(int(w[1]), int(w[2])): (float(w[4]), float(w[5]))
              for w in (line.split() for line in lines if line.startswith("pair_coeff 1")
                        or line.startswith("pair_coeff 2"))}
    assert coeffs == {(1, 1): rebuilt.pair_parameters("Al", "Al"),
                      (1, 2): (0.15, 2.5),
                      (2, 2): rebuilt.pair_parameters("Ti", "Ti")}


def test_deployed_model_gives_total_energies(tmp_path):
    """The fit target is energy minus the reference energies; the .yace adds them back."""
    from pyace import PyACECalculator

    files = _unfitted_yace(tmp_path, ["Al", "Ti"])
    refs = {"Ti": -850.8123456789, "Al": -1.2345678912}
    potential = register(files, {"elements": ["Al", "Ti"], "baseline": None,
                                 "reference_energies": refs}, tmp_path / "models")
    atoms = emt_frames(1, symbols="Al")[0]
    atoms.symbols[:3] = "Ti"
    energies = []
    for calc in (potential.calculator(), PyACECalculator(str(files[".yace"]))):
        copy = atoms.copy()
        copy.calc = calc
        energies.append(copy.get_potential_energy())
    assert energies[0] - energies[1] == pytest.approx(3 * refs["Ti"] + 5 * refs["Al"],
                                                      abs=1e-9)
    assert "E0: [-1.2345678912, -850.8123456789]" in potential.path.read_text()


def test_zbl_lammps_lines(tmp_path):
    files = _unfitted_yace(tmp_path, ["Al", "Ti"])
    zbl = ZBL(0.9, 2.1)
    register(files, {"elements": ["Al", "Ti"], "baseline": zbl.describe()}, tmp_path / "m")
    text = (tmp_path / "m" / "potential_gen_01.lammps").read_text()
    assert "pair_style hybrid/overlay pace zbl 0.9 2.1" in text
    assert "pair_coeff 1 2 zbl 13.0 22.0" in text
    register(files, {"elements": ["Al", "Ti"], "baseline": None}, tmp_path / "m")
    plain = (tmp_path / "m" / "potential_gen_02.lammps").read_text()
    assert "pair_style pace\n" in plain and "zbl" not in plain
    assert json.loads((tmp_path / "m" / "potential_gen_02.json").read_text())["baseline"] is None
