"""Training with the real pacemaker and TensorFlow (evaluator tensorpot): a warm start
from the previous generation converges faster than a cold start, and a production-size
basis fits a real DFT set other than the demo."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import BIN, DEMO, DFT, extxyz_frames, needs_shared
from mlipstore.params import Params
from mlipstore.pipeline.stages import run_stage
from mlipstore.potentials.registry import Potential
from mlipstore.training.pacemaker import train_losses

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (BIN / "pacemaker").exists() and not shutil.which("pacemaker"),
                       reason="pacemaker (python-ace) is not installed"),
]
ITERATIONS = 100
PRODUCTION_ITERATIONS = 100


def fit(root, functions: int = 100, **training) -> Potential:
    """ingest -> export -> select -> train with the default params.yaml, the basis sized
    to ``functions`` per element and ``training`` overriding other keys."""
    params = Params.model_validate({
        "ingest": {"key_maps": {"*TiAl*": "forces=force,virial=virial"}},
        "select": {"method": "none"},
        "training": {"ace_basis_config": {"number_of_functions_per_element": functions},
                     "max_epochs": ITERATIONS, **training},
    })
    for stage in ("ingest", "export", "select", "train"):
        run_stage(stage, root, params, progress=False)
    return Potential.load(None, root / "models")


def test_warm_start_converges_faster_than_a_cold_start(tmp_path, record_property):
    """Generation 2 adds more data of the kind generation 1 was trained on (every third
    demo structure, held back at first)."""
    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    frames = extxyz_frames(DEMO)
    (root / "data" / "raw" / "a_TiAl.xyz").write_text("".join(
        f for i, f in enumerate(frames) if i % 3))
    assert fit(root).generation == 1

    (root / "data" / "raw" / "b_TiAl.xyz").write_text("".join(frames[::3]))
    warm = fit(root)  # initial_potential: previous (the default)
    assert warm.generation == 2
    assert warm.meta["initial_potential"]["parent"]["generation"] == 1
    warm_losses = train_losses(shutil.copy(warm.path.with_suffix(".log"), tmp_path / "w.log"))
    cold = fit(root, initial_potential="none")  # the same data from scratch: replaces gen 02
    assert cold.generation == 2 and cold.meta["initial_potential"]["parent"] is None
    cold_losses = train_losses(cold.path.with_suffix(".log"))

    assert len(cold_losses) >= ITERATIONS - 1 and len(warm_losses) >= ITERATIONS - 1
    target = cold_losses[-1][1]  # the cold start's train loss after all its iterations
    reached = next((it for it, loss in warm_losses if loss <= target), None)
    record_property("figure", (
        f"warm start: train loss {warm_losses[0][1]:.3g} at iteration 1 (cold start "
        f"{cold_losses[0][1]:.3g}); reached the cold start's final loss {target:.3g} after "
        f"{reached} of {ITERATIONS} iterations; final loss warm {warm_losses[-1][1]:.3g}"))
    assert reached is not None and reached < 0.75 * ITERATIONS
    assert warm_losses[-1][1] < target


@needs_shared
def test_production_basis_on_real_molecular_dft(tmp_path, record_property):
    """3BPA (DFT, 500 conformers of one molecule, C H N O) with the default
    TrainingConfig: 300 functions per element, four elements (2,390 parameters)."""
    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy(DFT / "BOTNet-datasets" / "dataset_3BPA" / "train_300K.xyz",
                root / "data" / "raw")
    potential = fit(root, functions=300, max_epochs=PRODUCTION_ITERATIONS)
    m = json.loads((root / "metrics.json").read_text())
    test = pd.read_pickle(root / "data" / "export" / "test.pckl.gzip", compression="gzip")
    n_atoms = test["ase_atoms"].map(len).to_numpy()
    spread = 1000 * np.std(test["energy_corrected"].to_numpy() / n_atoms)  # meV/atom
    force_spread = 1000 * np.std(np.concatenate([np.ravel(f) for f in test["forces"]]))
    functions = yaml.safe_load(potential.meta["input_yaml"])["potential"]["functions"]
    record_property("figure", (
        f"3BPA, 300 functions per element, {PRODUCTION_ITERATIONS} iterations: test energy "
        f"RMSE {m['test']['energy_rmse']:.2f} meV/atom (spread {spread:.2f}), forces "
        f"{m['test']['forces_rmse']:.0f} meV/Å (spread {force_spread:.0f}); "
        f"{m['train']['n_structures']} train / {m['test']['n_structures']} test structures; "
        f"fit {potential.meta['timings']['fit_s']:.0f} s"))
    assert functions["number_of_functions_per_element"] == 300
    assert m["test"]["n_structures"] > 30
    # forces are learned within CI's budget; a molecule's conformer energies (a spread of
    # a few meV/atom) need far more iterations than 100
    assert m["test"]["forces_rmse"] < force_spread / 4
    assert m["test"]["energy_rmse"] < 0.9 * spread
