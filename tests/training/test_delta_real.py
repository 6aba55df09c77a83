"""Delta learning with the real pacemaker on real DFT data (the TiAl demo set): the
deployed model reproduces DFT as well as the fit reports, and a ZBL reference makes the
short range repulsive where the plain fit is not."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from helpers import BIN, DEMO
from mlipstore.params import Params
from mlipstore.pipeline.stages import run_stage
from mlipstore.potentials.registry import Potential

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "pacemaker").exists() and not shutil.which("pacemaker"),
                       reason="pacemaker (python-ace) is not installed"),
]

SHORT = np.linspace(0.5, 1.4, 46)  # Angstrom: below the shortest distance in the data (1.51)
LJ = {"Al": {"epsilon": 0.01, "sigma": 2.0}, "Ti": {"epsilon": 0.02, "sigma": 2.1}}
VARIANTS = {
    "none": {"reference_potential": "none"},
    "zbl_core": {"reference_potential": "ZBL", "zbl": {"mode": "core_repulsion"}},
    "zbl_delta": {"reference_potential": "ZBL", "zbl": {"mode": "delta"}},
    "lj_delta": {"reference_potential": "LJ", "lj": {"elements": LJ}},
}


@pytest.fixture(scope="module")
def fits(tmp_path_factory) -> dict[str, Potential]:
    """One small real fit per reference, in one project (generations 1..4)."""
    root = tmp_path_factory.mktemp("delta")
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy(DEMO, root / "data" / "raw")
    potentials = {}
    for name, training in VARIANTS.items():
        # a small basis fitted by pyace (numerical gradients): each fit takes seconds
        params = Params.model_validate({
            "ingest": {"key_maps": {"*TiAl*": "forces=force,virial=virial"}},
            "select": {"method": "random", "n_structures": 40},
            "training": {"max_epochs": 15, "evaluator": "pyace", "initial_potential": "none",
                         "loss_weights": {"energy": 0.9, "force": 0.1},
                         "ace_basis_config": {"number_of_functions_per_element": 10,
                                              "nradmax_by_orders": [6, 2, 1],
                                              "lmax_by_orders": [0, 1, 1]}, **training},
        })
        for stage in ("ingest", "export", "select", "train"):
            run_stage(stage, root, params, progress=False)
        # same data, so each variant retrains generation 01: keep each one's files
        kept = shutil.copytree(root / "models", root / f"models_{name}")
        potentials[name] = Potential.load(None, kept)
    potentials["root"] = root
    return potentials


@pytest.mark.parametrize("name", ["none", "zbl_delta", "lj_delta"])
def test_deployed_model_matches_dft_within_train_rmse(fits, name, record_property):
    potential = fits[name]
    pool = pd.read_pickle(fits["root"] / "data" / "export" / "pool.pckl.gzip",
                          compression="gzip")  # the last export; re-derive DFT targets
    train_ids = set(potential.meta["train"]["ids"])
    assert potential.meta["reference_energies"]  # "auto": non-zero, so the check bites
    calc = potential.calculator()
    de, df = [], []
    for _, row in pool[pool["name"].isin(train_ids)].iterrows():
        atoms = row["ase_atoms"].copy()
        atoms.calc = calc
        # the deployed model is references (the .yace's E0) + ACE + baseline: DFT's total
        de.append((atoms.get_potential_energy() - row["energy"]) / len(atoms))
        dft_forces = row["forces"] + _baseline_forces(fits["lj_delta"], row["ase_atoms"])
        df.append((atoms.get_forces() - dft_forces).ravel())
    rmse_e = 1000 * np.sqrt(np.mean(np.square(de)))
    rmse_f = 1000 * np.sqrt(np.mean(np.square(np.concatenate(df))))
    reported = potential.meta["metrics"]["train"]
    record_property("figure", (
        f"{name}: deployed model vs DFT on {len(de)} training structures: energy RMSE "
        f"{rmse_e:.2f} meV/atom (fit reported {reported['energy_rmse']:.2f}), forces "
        f"{rmse_f:.1f} meV/Å (reported {reported['forces_rmse']:.1f})"))
    assert len(de) == reported["n_structures"]
    assert rmse_e <= reported["energy_rmse"] * 1.001 + 0.01
    assert rmse_f <= reported["forces_rmse"] * 1.001 + 0.1


def _baseline_forces(last_fit: Potential, atoms) -> np.ndarray:
    """The exported forces of the last export are DFT - that export's baseline; add the
    export's baseline back to get DFT (the last export was the LJ one)."""
    last = last_fit.baseline
    if last is None:
        return 0.0
    atoms = atoms.copy()
    atoms.calc = last
    return atoms.get_forces()


def _repulsive_and_monotonic(potential: Potential) -> dict[str, bool]:
    out = {}
    elements = potential.meta["elements"]
    for i, a in enumerate(elements):
        for b in elements[i:]:
            e = potential.dimer_energies(a, b, SHORT)
            out[f"{a}-{b}"] = bool(np.all(np.diff(e) < 0) and e[0] - e[-1] > 10.0)
    return out


def test_zbl_makes_short_range_repulsive(fits, record_property):
    plain = _repulsive_and_monotonic(fits["none"])
    core = _repulsive_and_monotonic(fits["zbl_core"])
    delta = _repulsive_and_monotonic(fits["zbl_delta"])
    record_property("figure", (
        f"repulsive and monotonic on 0.5-1.4 Å: plain {plain}, ZBL core repulsion {core}, "
        f"ZBL delta {delta}"))
    assert all(core.values()) and all(delta.values())
    assert not all(plain.values())
    plot = fits["root"] / "plots" / "dimer.png"
    assert plot.stat().st_size > 1000
    assert (fits["root"] / "plots" / "dimer" / "Al-Ti.csv").exists()
