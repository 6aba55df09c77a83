"""The whole pipeline with the real pacemaker (TensorFlow evaluator) and pace_activeset, on
the demo data with the default params.yaml (what `bash setup.sh` runs; about five minutes
on two cores)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import BIN, DEMO, metrics, new_project, ran_stages, run
from mlipstore.potentials.registry import Potential

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "pacemaker").exists() and not shutil.which("pacemaker"),
                       reason="pacemaker (python-ace) is not installed"),
]


def test_demo_pipeline_fits_a_real_potential(tmp_path, record_property):
    root = new_project(tmp_path / "demo")
    shutil.copy(DEMO, root / "data" / "raw" / DEMO.name)
    out = run(["dvc", "repro"], root, fake=False).stdout
    assert ran_stages(out) == ["ingest", "export", "select", "train"]

    m = metrics(root)
    test = pd.read_pickle(root / "data" / "export" / "test.pckl.gzip", compression="gzip")
    n_atoms = test["ase_atoms"].map(len).to_numpy()
    spread = 1000 * np.std(test["energy_corrected"].to_numpy() / n_atoms)  # meV/atom
    lineage = json.loads((root / "models" / "potential_gen_01.json").read_text())
    record_property("figure", (
        f"demo fit (defaults, tensorpot): test energy RMSE {m['test']['energy_rmse']:.1f} "
        f"meV/atom, forces {m['test']['forces_rmse']:.1f} meV/Å; spread of test energies "
        f"{spread:.1f} meV/atom; train {m['train']['n_structures']} / test "
        f"{m['test']['n_structures']} structures; fit {lineage['timings']['fit_s']:.0f} s"))
    assert m["test"]["n_structures"] == len(test) > 10
    assert yaml.safe_load(lineage["input_yaml"])["backend"]["evaluator"] == "tensorpot"
    # the targets of a real potential on this data (the training issue)
    assert m["test"]["energy_rmse"] <= 8.0 and m["test"]["forces_rmse"] <= 25.0

    # the registered .yace is the fitted model plus the reference energies: through ASE it
    # gives DFT's total energy with the same test error (pair_style pace adds the same E0)
    potential = Potential.load(1, root / "models")
    calc = potential.calculator()
    predicted = []
    for atoms in test["ase_atoms"]:
        atoms = atoms.copy()
        atoms.calc = calc
        predicted.append(atoms.get_potential_energy())
        assert np.isfinite(atoms.get_forces()).all()
    rmse = 1000 * np.sqrt(np.mean(((np.array(predicted) - test["energy"]) / n_atoms) ** 2))
    assert abs(np.mean(test["energy"] / n_atoms)) > 100  # total energies, not corrected
    assert rmse == pytest.approx(m["test"]["energy_rmse"], rel=1e-3, abs=0.05)
    assert lineage["reference_energies"].keys() == {"Al", "Ti"}
    assert potential.active_set.stat().st_size > 0
