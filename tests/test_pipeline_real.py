"""The whole pipeline with the real pacemaker, pace_select and pace_activeset, on the
demo data with the default params.yaml (what `bash setup.sh` runs; about three minutes)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from mlipstore.potentials import Potential
from pipeline_helpers import BIN, DEMO, metrics, new_project, ran_stages, run

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
    record_property("figure", (
        f"real fit: test energy RMSE {m['test']['energy_rmse']:.1f} meV/atom, "
        f"spread of test energies {spread:.1f} meV/atom, train "
        f"{m['train']['n_structures']} / test {m['test']['n_structures']} structures"))
    assert m["test"]["n_structures"] == len(test) > 10
    assert m["test"]["energy_rmse"] < spread / 4

    # the registered .yace is the fitted model: through ASE it gives the same test error
    potential = Potential.load(1, root / "models")
    calc = potential.calculator()
    predicted = []
    for atoms in test["ase_atoms"]:
        atoms = atoms.copy()
        atoms.calc = calc
        predicted.append(atoms.get_potential_energy())
        assert np.isfinite(atoms.get_forces()).all()
    rmse = 1000 * np.sqrt(np.mean(((np.array(predicted) - test["energy_corrected"]) / n_atoms)
                                  ** 2))
    assert rmse == pytest.approx(m["test"]["energy_rmse"], rel=1e-3, abs=0.05)
    lineage = json.loads(potential.path.with_suffix(".json").read_text())
    assert lineage["reference_energies"].keys() == {"Al", "Ti"}
    assert potential.active_set.stat().st_size > 0
