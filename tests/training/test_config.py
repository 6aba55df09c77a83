"""params.yaml validation, the split, and input.yaml generated key by key from the config."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mlipstore.params import ConfigError, Params, TrainingConfig, load_params
from mlipstore.training.pacemaker import PacemakerRunner
from mlipstore.training.split import test_mask


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
    ("training:\n  ladder_step: 0\n", "training.ladder_step = 0"),
    ("training:\n  ladder_step: [10, 0.2, 3]\n", "[integer, fraction]"),
    ("training:\n  initial_potential: latest\n", "training.initial_potential = 'latest'"),
    ("training:\n  evaluator: tensorflow\n", "training.evaluator = 'tensorflow'"),
    ("training:\n  weighting: {policy: energy}\n", "training.weighting.policy = 'energy'"),
    ("training:\n  weighting: {energy_based: {DElo: 1}}\n", "DElo = 1: unknown key"),
    ("training:\n  weighting: {by_tag: {surf: -1}}\n", "training.weighting.by_tag.surf = -1"),
    ("training:\n  gpu_config: {gpu_ind: -2}\n", "training.gpu_config.gpu_ind = -2"),
    ("training:\n  pacemaker_extra: {fit: {maxiter: 5}}\n", "fit.maxiter: mlipstore writes"),
    ("training:\n  pacemaker_extra: {fit: {weighting: {}}}\n", "set through training.weighting"),
    ("training:\n  pacemaker_extra: {data: {filename: x}}\n", "set through the pipeline"),
    ("training:\n  pacemaker_extra: {fitting: {}}\n", "not a section of pacemaker's"),
    # paths are dvc.yaml's, not settings (they were accepted and never read)
    ("ingest:\n  inbox: elsewhere\n", "ingest.inbox = 'elsewhere': unknown key"),
    ("export:\n  reference_energies: {Xx: 1}\n", "unknown element(s) ['Xx']"),
    ("export:\n  elements: [al, Ti]\n",
     "export.elements = ['al', 'Ti']: unknown element symbol(s) al"),
    ("export:\n  run_finished: maybe\n", "export.run_finished = 'maybe'"),
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
    config = TrainingConfig.model_validate({
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
    assert "initial_potential" not in pot
    assert doc["data"] == {"filename": str((tmp_path / "train.pckl.gzip").resolve()),
                           "test_filename": str((tmp_path / "test.pckl.gzip").resolve())}
    fit = doc["fit"]
    assert fit["loss"] == {"kappa": 0.25, "L1_coeffs": 1e-7, "L2_coeffs": 2e-7,
                           "w0_rad": 0.0, "w1_rad": 0.0, "w2_rad": 0.0}
    assert fit["optimizer"] == "L-BFGS-B" and fit["maxiter"] == 123
    assert fit["fit_cycles"] == 1 and fit["early_stopping_patience"] == 200
    assert doc["backend"] == {"evaluator": "pyace", "batch_size": 11, "display_step": 50,
                              "batch_size_reduction": True, "batch_size_reduction_factor": 2.0}
    # optional features are absent unless asked for: pacemaker switches them on by presence
    for key in ("weighting", "ladder_step", "ladder_type", "noise_relative_sigma",
                "noise_absolute_sigma", "min_relative_train_loss_per_iter",
                "min_relative_test_loss_per_iter"):
        assert key not in fit
    if reference == "ZBL":
        assert fit["repulsion"] == "auto"
    else:
        assert "repulsion" not in fit
    expected = {"cutoff", "seed", "metadata", "potential", "data", "fit", "backend"}
    assert set(doc) == expected


# each new params.yaml key (dotted) -> value, and where pacemaker's input.yaml must hold it
FITTING_FEATURES = [
    ("weighting.policy", "energy_based", ("fit", "weighting", "type"),
     "EnergyBasedWeightingPolicy"),
    ("weighting.energy_based.DElow", 0.5, ("fit", "weighting", "DElow"), 0.5),
    ("weighting.energy_based.DEup", 4.0, ("fit", "weighting", "DEup"), 4.0),
    ("weighting.energy_based.DFup", 30.0, ("fit", "weighting", "DFup"), 30.0),
    ("weighting.energy_based.DE", 0.2, ("fit", "weighting", "DE"), 0.2),
    ("weighting.energy_based.DF", 2.0, ("fit", "weighting", "DF"), 2.0),
    ("weighting.energy_based.wlow", 0.6, ("fit", "weighting", "wlow"), 0.6),
    ("weighting.energy_based.energy", "cohesive", ("fit", "weighting", "energy"), "cohesive"),
    ("weighting.energy_based.reftype", "bulk", ("fit", "weighting", "reftype"), "bulk"),
    ("ladder_step", 25, ("fit", "ladder_step"), 25),
    ("ladder_step", [10, 0.2], ("fit", "ladder_step"), [10, 0.2]),
    ("ladder_type", "power_order", ("fit", "ladder_type"), "power_order"),
    ("fit_cycles", 3, ("fit", "fit_cycles"), 3),
    ("noise_relative_sigma", 0.01, ("fit", "noise_relative_sigma"), 0.01),
    ("noise_absolute_sigma", 0.001, ("fit", "noise_absolute_sigma"), 0.001),
    ("min_relative_train_loss_per_iter", 1e-4, ("fit", "min_relative_train_loss_per_iter"),
     1e-4),
    ("min_relative_test_loss_per_iter", 1e-3, ("fit", "min_relative_test_loss_per_iter"),
     1e-3),
    ("early_stopping_patience", 50, ("fit", "early_stopping_patience"), 50),
    ("loss_weights.kappa", "auto", ("fit", "loss", "kappa"), "auto"),
    ("w0_rad", 1e-4, ("fit", "loss", "w0_rad"), 1e-4),
    ("w1_rad", 2e-4, ("fit", "loss", "w1_rad"), 2e-4),
    ("w2_rad", 3e-4, ("fit", "loss", "w2_rad"), 3e-4),
    ("reference_potential", "ZBL", ("fit", "repulsion"), "auto"),
    ("batch_size", 7, ("backend", "batch_size"), 7),
    ("batch_size_reduction", False, ("backend", "batch_size_reduction"), False),
    ("batch_size_reduction_factor", 1.5, ("backend", "batch_size_reduction_factor"), 1.5),
    ("gpu_config", {"gpu_ind": 1, "mem_limit": 4096}, ("backend", "gpu_config"),
     {"gpu_ind": 1, "mem_limit": 4096}),
    ("evaluator", "pyace", ("backend", "evaluator"), "pyace"),
    ("pacemaker_extra", {"fit": {"options": {"gtol": 1e-9}}, "metadata": {"note": "x"}},
     ("fit", "options", "gtol"), 1e-9),
    ("pacemaker_extra", {"metadata": {"note": "x"}}, ("metadata", "note"), "x"),
]


@pytest.mark.parametrize("dotted, value, path, expected", FITTING_FEATURES,
                         ids=[f"{f[0]}={f[1]}" for f in FITTING_FEATURES])
def test_fitting_features_key_by_key(tmp_path, dotted, value, path, expected):
    """Each pacemaker fitting feature of params.yaml lands where pacemaker reads it, and
    the default leaves that key out or at pacemaker's own default."""
    data: dict = {}
    node = data
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    if dotted.startswith("weighting.energy_based"):
        data["weighting"]["policy"] = "energy_based"  # the parameters of that policy
    if dotted == "ladder_type":
        data["ladder_step"] = 10
    params = load_params(write(tmp_path, yaml.safe_dump({"training": data})))
    doc = yaml.safe_load(yaml.safe_dump(PacemakerRunner(params.training).generate_input_yaml(
        tmp_path / "train.pckl.gzip", ["Al"])))
    node = doc
    for key in path:
        node = node[key]
    assert node == expected
    default = yaml.safe_load(yaml.safe_dump(PacemakerRunner(Params().training)
                                            .generate_input_yaml(tmp_path / "t", ["Al"])))
    for key in path[:-1]:
        default = default.get(key, {})
    assert default.get(path[-1]) != expected


def test_warm_start_path_in_input_yaml(tmp_path):
    parent = tmp_path / "models" / "potential_gen_01.yaml"
    doc = PacemakerRunner(Params().training).generate_input_yaml(
        tmp_path / "train.pckl.gzip", ["Al"], initial_potential=parent)
    assert doc["potential"]["initial_potential"] == str(parent.resolve())


def test_split_is_stable_when_data_is_added():
    rng = np.random.default_rng(0)
    ids = [f"{x:032x}" for x in rng.integers(0, 2**62, 4000)]
    first = dict(zip(ids[:1000], test_mask(ids[:1000], 0.2, seed=7), strict=True))
    grown = dict(zip(ids, test_mask(ids, 0.2, seed=7), strict=True))
    assert all(grown[i] == side for i, side in first.items())
    assert 0.17 < np.mean(list(grown.values())) < 0.23
    assert not np.array_equal(test_mask(ids, 0.2, seed=8), test_mask(ids, 0.2, seed=7))


def test_filter_params_are_the_scan_filter():
    """params.yaml's filters (export, explore.start) have ScanFilter's fields, once."""
    from dataclasses import fields

    from mlipstore.params import ExploreParams, FilterParams
    from mlipstore.store.filters import ScanFilter

    assert set(FilterParams.model_fields) == {f.name for f in fields(ScanFilter)} - {"ids"}
    start = ExploreParams.model_validate({"start": {"elements": ["Al"], "max_atoms": 8}})
    assert start.start.scan_filter() == ScanFilter(elements=["Al"], max_atoms=8)
    with pytest.raises(ValueError, match="unknown element"):
        ExploreParams.model_validate({"start": {"elements": ["al"]}})
