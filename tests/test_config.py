"""params.yaml validation, the split, and input.yaml generated key by key from the config."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mlipstore.config import ConfigError, Params, load_params, training_config
from mlipstore.pacemaker import PacemakerRunner
from mlipstore.split import test_mask


def write(tmp_path, text: str):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, needle", [
    ("training:\n  max_epoch: 10\n", "training.max_epoch = 10: unknown key"),
    ("training:\n  loss_weights: {stress: 1.0}\n", "training.loss_weights.stress = 1.0"),
    ("training:\n  reference_potential: morse\n", "training.reference_potential = 'morse'"),
    ("training:\n  ace_basis_config: {lmax_by_orders: [1, 1, 1]}\n", "pair order"),
    ("training:\n  ace_basis_config: {nradmax_by_orders: [6, 2]}\n", "same body orders"),
    ("select:\n  method: greedy\n", "select.method = 'greedy'"),
    ("split:\n  test_fraction: 1.5\n", "split.test_fraction = 1.5"),
    ("exprt: {}\n", "exprt = {}: unknown key"),
    ("training:\n  loss_weights: {energy: 0, force: 0}\n", "nothing to fit"),
])
def test_bad_params_are_errors_that_name_key_and_value(tmp_path, text, needle):
    with pytest.raises(ConfigError) as err:
        load_params(write(tmp_path, text))
    assert needle in str(err.value) and "params.yaml" in str(err.value)


def test_defaults_and_case_of_reference(tmp_path):
    params = load_params(write(tmp_path, "training:\n  reference_potential: zbl\n"))
    assert params.training.reference_potential == "ZBL"
    assert load_params(write(tmp_path, "")) == Params()


@pytest.mark.parametrize("reference", ["none", "ZBL", "LJ"])
def test_input_yaml_key_by_key(tmp_path, reference):
    config = training_config({
        "ace_basis_config": {"number_of_functions_per_element": 17,
                             "nradmax_by_orders": [7, 3], "lmax_by_orders": [0, 2],
                             "r_cut": 6.25, "dcut": 0.02, "radial_basis": "ChebExpCos",
                             "radparameters": [4.0], "ndensity": 2},
        "reference_potential": reference, "max_epochs": 123, "batch_size": 11,
        "loss_weights": {"energy": 3.0, "force": 1.0}, "l1_coeff": 1e-7, "l2_coeff": 2e-7,
        "optimizer": "L-BFGS-B", "evaluator": "pyace", "seed": 9,
        "lj": {"elements": {"Al": {"epsilon": 0.1, "sigma": 2.5},
                            "Ti": {"epsilon": 0.1, "sigma": 2.5}}},
    })
    doc = PacemakerRunner(config).generate_input_yaml(tmp_path / "train.pckl.gzip",
                                                      ["Ti", "Al"], tmp_path / "test.pckl.gzip")
    doc = yaml.safe_load(yaml.safe_dump(doc))  # what pacemaker will read back
    assert doc["cutoff"] == 6.25 and doc["seed"] == 9
    pot = doc["potential"]
    assert pot["elements"] == ["Al", "Ti"]
    assert pot["embeddings"]["ALL"] == {"npot": "FinnisSinclairShiftedScaled",
                                        "fs_parameters": [1, 1, 1, 0.5], "ndensity": 2}
    assert pot["bonds"]["ALL"] == {"radbase": "ChebExpCos", "radparameters": [4.0],
                                   "rcut": 6.25, "dcut": 0.02, "NameOfCutoffFunction": "cos"}
    assert pot["functions"] == {"number_of_functions_per_element": 17,
                                "ALL": {"nradmax_by_orders": [7, 3], "lmax_by_orders": [0, 2]}}
    assert doc["data"] == {"filename": str((tmp_path / "train.pckl.gzip").resolve()),
                           "test_filename": str((tmp_path / "test.pckl.gzip").resolve())}
    fit = doc["fit"]
    assert fit["loss"] == {"kappa": 0.25, "L1_coeffs": 1e-7, "L2_coeffs": 2e-7}
    assert fit["optimizer"] == "L-BFGS-B" and fit["maxiter"] == 123
    assert doc["backend"] == {"evaluator": "pyace", "batch_size": 11, "display_step": 50}
    if reference == "ZBL":
        assert fit["repulsion"] == "auto"
    else:
        assert "repulsion" not in fit
    expected = {"cutoff", "seed", "metadata", "potential", "data", "fit", "backend"}
    assert set(doc) == expected


def test_split_is_stable_when_data_is_added():
    rng = np.random.default_rng(0)
    ids = [f"{x:032x}" for x in rng.integers(0, 2**62, 4000)]
    first = dict(zip(ids[:1000], test_mask(ids[:1000], 0.2, seed=7), strict=True))
    grown = dict(zip(ids, test_mask(ids, 0.2, seed=7), strict=True))
    assert all(grown[i] == side for i, side in first.items())
    assert 0.17 < np.mean(list(grown.values())) < 0.23
    assert not np.array_equal(test_mask(ids, 0.2, seed=8), test_mask(ids, 0.2, seed=7))
