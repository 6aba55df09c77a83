"""Training features with the fast fake pacemaker: generations (new data -> next number,
same data -> the generation is replaced), warm starts from the previous generation,
weights by tag, and the store without TensorFlow."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from helpers import (
    BIN,
    DEMO,
    TINY_BASIS,
    emt_frames,
    env,
    metrics,
    new_project,
    run,
    split_extxyz,
)
from mlipstore.params import Params
from mlipstore.pipeline.stages import run_stage
from mlipstore.potentials.registry import Potential, list_potentials

TINY = {"number_of_functions_per_element": 10, "nradmax_by_orders": [6, 2, 1],
        "lmax_by_orders": [0, 1, 1]}


def params(**training) -> Params:
    return Params.model_validate({
        "ingest": {"key_maps": {"*TiAl*": "forces=force,virial=virial"}},
        "select": {"method": "none"},
        "training": {"ace_basis_config": TINY, "max_epochs": 3, **training},
    })


def train(root, p: Params, record=None, monkeypatch=None) -> Potential:
    if record is not None:
        monkeypatch.setenv("FAKE_PACEMAKER_RECORD", str(record))
    for stage in ("ingest", "export", "select", "train"):
        run_stage(stage, root, p, progress=False)
    return Potential.load(None, root / "models")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", env()["PATH"])  # the fake pacemaker first
    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl.xyz", 0, 40)])
    return root


def test_generations_warm_starts_and_retrains(project, tmp_path, monkeypatch):
    root, models = project, project / "models"
    gen1 = train(root, params())
    assert gen1.generation == 1
    assert gen1.meta["initial_potential"] == {
        "mode": "previous", "parent": None,
        "reason": "initial_potential previous: no earlier generation trained on other data"}

    # other hyperparameters, same data: generation 01 is replaced, not duplicated
    retrain = train(root, params(max_epochs=5), tmp_path / "rec1", monkeypatch)
    assert [p.generation for p in list_potentials(models)] == [1]
    assert retrain.meta["dataset_sha256"] == gen1.meta["dataset_sha256"]
    assert yaml.safe_load(retrain.meta["input_yaml"])["fit"]["maxiter"] == 5
    assert json.loads((root / "metrics.json").read_text())["generation"] == 1
    assert not list(models.glob(".*.tmp"))

    # new data: generation 02, warm-started from generation 01's coefficients
    split_extxyz(DEMO, [(root / "data" / "raw" / "b_TiAl.xyz", 40, 60)])
    gen2 = train(root, params(), tmp_path / "rec2", monkeypatch)
    assert gen2.generation == 2
    parent = gen2.meta["initial_potential"]["parent"]
    assert parent["generation"] == 1 and parent["name"] == "potential_gen_01"
    assert parent["sha256"] == _sha256(models / "potential_gen_01.yaml")
    # same basis as the parent: pacemaker continues from it (an initial_potential of the
    # full size would be extended by nothing and not fitted)
    sent = yaml.safe_load((tmp_path / "rec2" / "input.yaml").read_text())
    assert sent["potential"] == {"filename": str((models / "potential_gen_01.yaml").resolve())}

    # a retrain of generation 02 starts from the same parent, not from itself
    again = train(root, params(max_epochs=4), tmp_path / "rec3", monkeypatch)
    assert again.generation == 2 and [p.generation for p in list_potentials(models)] == [1, 2]
    assert again.meta["initial_potential"]["parent"]["generation"] == 1

    # a larger basis grows from the parent (pacemaker's upfitting: initial_potential)
    bigger = train(root, params(ace_basis_config={**TINY, "number_of_functions_per_element": 14}),
                   tmp_path / "rec4", monkeypatch)
    sent = yaml.safe_load((tmp_path / "rec4" / "input.yaml").read_text())
    assert sent["potential"]["initial_potential"] == str((models / "potential_gen_01.yaml")
                                                         .resolve())
    assert sent["potential"]["functions"]["number_of_functions_per_element"] == 14
    assert bigger.meta["initial_potential"]["parent"]["generation"] == 1

    # another cutoff: no usable parent, a cold start that says why
    cold = train(root, params(ace_basis_config={**TINY, "r_cut": 5.5}))
    assert cold.meta["initial_potential"]["parent"] is None
    assert "r_cut" in cold.meta["initial_potential"]["reason"]

    # an explicit file, and none
    path = train(root, params(initial_potential=str(models / "potential_gen_01.yaml")))
    assert path.meta["initial_potential"]["parent"]["sha256"] == parent["sha256"]
    assert train(root, params(initial_potential="none")).meta["initial_potential"] == {
        "mode": "none", "parent": None, "reason": None}
    with pytest.raises(Exception, match="no such file"):
        train(root, params(initial_potential=str(tmp_path / "missing.yaml")))


def test_weights_by_tag_reach_pacemaker(project, tmp_path, monkeypatch):
    root = project
    (root / "data" / "raw" / "surfaces").mkdir()
    split_extxyz(DEMO, [(root / "data" / "raw" / "surfaces" / "s_TiAl.xyz", 40, 50)])
    p = params(weighting={"by_tag": {"surfaces": 5.0, "absent": 9.0}})
    train(root, p, tmp_path / "rec", monkeypatch)
    sent = pd.read_pickle(tmp_path / "rec" / "train.pckl.gzip", compression="gzip")
    pool = pd.read_pickle(root / "data" / "export" / "pool.pckl.gzip", compression="gzip")
    tags = dict(zip(pool["name"], pool["tags"], strict=True))
    expected = [5.0 if "surfaces" in tags[name] else 1.0 for name in sent["name"]]
    assert list(sent["w_factor"]) == expected and 5.0 in expected and 1.0 in expected
    assert "tags" not in sent  # pacemaker gets its own columns only


def test_store_and_pyace_work_without_tensorflow(tmp_path):
    """TensorFlow and tensorpotential made unimportable: the store commands and a real
    pyace fit work; evaluator tensorpot fails at once, saying how to install it."""
    blocker = tmp_path / "no_tensorflow"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('tensorflow', 'tensorpotential', 'tf_keras'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n")
    e = env(fake=False, PYTHONPATH=str(blocker))
    python = str(BIN / "python")
    probe = subprocess.run([python, "-c", "import tensorflow"], env=e, capture_output=True)
    assert probe.returncode != 0  # the blocker works
    subprocess.run([python, "-c", "import mlipstore, mlipstore.pipeline"], env=e, check=True)

    root = tmp_path / "proj"
    (root / "data" / "raw").mkdir(parents=True)
    import ase.io
    ase.io.write(root / "data" / "raw" / "emt.extxyz", emt_frames(8, seed=5), format="extxyz")
    mlipstore = str(BIN / "mlipstore")
    for args in (["ingest", "data/raw", "--store", "data/store", "--quiet"],
                 ["info", "--store", "data/store"],
                 ["export", "--store", "data/store", "-o", "x.pckl.gzip", "--quiet"],
                 ["stage", "export", "--quiet"], ["stage", "select", "--quiet"]):
        result = subprocess.run([mlipstore, *args], cwd=root, env=e, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr
    fit = {"ace_basis_config": {"number_of_functions_per_element": 4, "nradmax_by_orders": [3],
                                "lmax_by_orders": [0], "r_cut": 4.0}, "max_epochs": 2}
    for evaluator in ("tensorpot", "pyace"):
        (root / "params.yaml").write_text(yaml.safe_dump({
            "select": {"method": "none"}, "training": {**fit, "evaluator": evaluator}}))
        result = subprocess.run([mlipstore, "stage", "train", "--quiet"], cwd=root, env=e,
                                capture_output=True, text=True, timeout=600)
        if evaluator == "tensorpot":
            assert result.returncode == 1
            assert "lacks (tensorflow, tensorpotential)" in result.stderr
            assert "setup.sh --install" in result.stderr
            assert "training.evaluator: pyace" in result.stderr
            assert not (root / "models").exists()
        else:
            assert result.returncode == 0, result.stderr[-3000:]
            assert Potential.load(None, root / "models").meta["input_yaml"].count("pyace")


def _sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_basis_larger_than_the_data_is_refused_before_the_fit(project, tmp_path, monkeypatch):
    """pace_activeset needs as many atoms of each element as functions per element: a
    basis too large for the data is an error naming the counts, before pacemaker runs."""
    from mlipstore.training.pacemaker import PacemakerError

    too_big = params(ace_basis_config={**TINY, "number_of_functions_per_element": 5000})
    with pytest.raises(PacemakerError, match=r"per element \(5000\): Al \d+, Ti \d+.*at most"):
        train(project, too_big, tmp_path / "rec", monkeypatch)
    assert not (tmp_path / "rec").exists() and not (project / "models").exists()


def test_metrics_cover_the_pool_structures_left_out(tmp_path):
    """maxvol trains on the unusual structures: `rest` reports the others."""
    root = new_project(tmp_path / "proj", {**TINY_BASIS, "training.max_epochs": 3,
                                           "select.method": "random",
                                           "select.n_structures": 20})
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl_tutorial.xyz", 0, 60)])
    run(["dvc", "repro"], root)
    m = metrics(root)
    pool = pd.read_pickle(root / "data" / "export" / "pool.pckl.gzip", compression="gzip")
    assert m["train"]["n_structures"] == 20
    assert m["rest"]["n_structures"] == len(pool) - 20 > 0
    assert np.isfinite(m["rest"]["energy_rmse"]) and m["rest"]["forces_rmse"] > 0
