"""Exploration with a real (small) fitted TiAl potential: MD through ASE, the extrapolation
grade at every step, candidates only between the thresholds, and runs that stop cleanly
on gamma above the upper threshold, on NaN from a broken potential and on close atoms."""

from __future__ import annotations

import json
import re
import shutil

import ase.io
import numpy as np
import pytest

from helpers import BIN, DEMO
from helpers import run as run_command
from mlipstore.params import ExploreParams, Params
from mlipstore.pipeline.explore import explore, pick_starts, write_exploration
from mlipstore.pipeline.stages import run_stage
from mlipstore.potentials.registry import Potential
from mlipstore.potentials.screening import extrapolation_grades

pytestmark = pytest.mark.skipif(not (BIN / "pacemaker").exists() and not shutil.which(
    "pacemaker"), reason="pacemaker (python-ace) is not installed")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The TiAl demo data and its generation 1: a small basis fitted by pyace (seconds)."""
    root = tmp_path_factory.mktemp("explore")
    (root / "data" / "raw").mkdir(parents=True)
    shutil.copy(DEMO, root / "data" / "raw")
    params = Params.model_validate({
        "ingest": {"key_maps": {"*TiAl*": "forces=force,virial=virial"}},
        "select": {"method": "random", "n_structures": 40},
        "training": {"max_epochs": 15, "evaluator": "pyace", "initial_potential": "none",
                     "ace_basis_config": {"number_of_functions_per_element": 10,
                                          "nradmax_by_orders": [6, 2, 1],
                                          "lmax_by_orders": [0, 1, 1]}},
    })
    for stage in ("ingest", "export", "select", "train"):
        run_stage(stage, root, params, progress=False)
    return root


def settings(**changes) -> ExploreParams:
    # this small basis extrapolates little: gamma stays near 0.8 at 800 K and reaches about
    # 2 within 150 steps at 3000 K
    base = {"temperatures_K": [1500.0, 3000.0], "steps": 150, "trajectories": 4,
            "gamma_lower": 1.0, "gamma_upper": 1000.0, "collect_every_steps": 5,
            "max_candidates": 5, "start": {"max_atoms": 40}}
    return ExploreParams.model_validate({**base, **changes})


def test_exploration_collects_frames_between_the_thresholds(project, tmp_path):
    potential = Potential.load(None, project / "models")
    s = settings()
    starts = pick_starts(project / "data" / "store", s)
    assert len(starts) == 4 and all(len(a) <= 40 for a in starts)
    result = explore(potential, starts, s, workers=2)
    assert [run.temperature_K for run in result.runs] == [1500.0, 3000.0, 1500.0, 3000.0]
    assert result.collected, "no frame above gamma_lower at 3000 K"
    gammas = np.array([a.info["gamma"] for a in result.collected])
    assert (gammas > s.gamma_lower).all() and (gammas <= s.gamma_upper).all()
    # the grade recorded during MD is the one screening computes for the frame
    np.testing.assert_allclose(extrapolation_grades(potential, result.collected), gammas,
                               rtol=1e-8)
    for run in result.runs:
        steps = [a.info["step"] for a in result.collected if a.info["run"] == run.index]
        assert np.all(np.diff(steps) >= s.collect_every_steps)
        assert all(run.max_gamma[step] == pytest.approx(a.info["gamma"]) for a, step in
                   ((a, a.info["step"]) for a in result.collected
                    if a.info["run"] == run.index))
    # thinned D-optimally: a subset of what was collected, at most max_candidates
    assert 0 < len(result.candidates) <= min(s.max_candidates, len(result.collected))
    keys = {(a.info["run"], a.info["step"]) for a in result.collected}
    assert {(a.info["run"], a.info["step"]) for a in result.candidates} <= keys

    summary = write_exploration(result, tmp_path / "out")
    per_step = np.concatenate([run.max_gamma for run in result.runs])
    assert summary["fraction_above_lower"] == pytest.approx(np.mean(per_step > 1.0))
    assert summary["steps_run"] == sum(run.steps_run for run in result.runs)
    back = ase.io.read(tmp_path / "out" / "candidates.extxyz", ":")
    assert [a.info["gamma"] for a in back] == [a.info["gamma"] for a in result.candidates]
    assert {"run", "step", "temperature_K", "start_id"} <= set(back[0].info)
    assert (tmp_path / "out" / "gamma.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "out" / "explore.json").read_text()) == summary


def test_runs_stop_at_the_upper_threshold_and_on_close_atoms(project):
    potential = Potential.load(None, project / "models")
    s = settings(gamma_lower=0.1, gamma_upper=1.1, steps=300, temperatures_K=[3000.0])
    result = explore(potential, pick_starts(project / "data" / "store", s), s, workers=2)
    for run in result.runs:
        assert run.stopped and run.stopped.startswith("gamma "), run.stopped
        assert run.max_gamma[-1] > 1.1 and run.steps_run < 300
        # max_gamma holds step 0 (the start) to the failing step; the steps before it ran
        assert run.steps_run == len(run.max_gamma) - 2
    assert all(a.info["gamma"] <= 1.1 for a in result.collected)
    s = settings(min_distance_A=3.5)  # beyond the nearest neighbours of every start
    close = explore(potential, pick_starts(project / "data" / "store", s), s, workers=2)
    for run in close.runs:
        assert re.fullmatch(r"atoms [0-9.]+ Å apart \(min_distance_A 3.5\)", run.stopped)
        assert run.steps_run == 0 and len(run.max_gamma) == 1


def test_a_broken_potential_stops_every_run_with_the_reason(project, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(project / "models", models)
    potential = Potential.load(None, models)
    text = potential.basis_yaml.read_text()
    broken = re.sub(r"(radcoefficients: \[\[\[)[-0-9.e]+", r"\g<1>.nan", text, count=1)
    assert broken != text
    potential.basis_yaml.write_text(broken)
    s = settings()
    result = explore(potential, pick_starts(project / "data" / "store", s), s, workers=2)
    assert [run.stopped for run in result.runs] == ["non-finite energy, forces or gamma"] * 4
    assert all(run.steps_run == 0 for run in result.runs)
    assert result.collected == [] and result.candidates == []


def test_cli_explore_writes_the_generation_folder(project):
    out = run_command([str(BIN / "mlipstore"), "explore", "--steps", "40", "--trajectories", "2",
               "--temperatures", "1500", "--gamma-lower", "1.0", "--gamma-upper", "1000",
               "--workers", "2"], project).stdout
    folder = project / "explore" / "gen_01"
    assert "run 0: 1500 K, 40 steps (0.04 ps)" in out
    assert "wrote explore/gen_01/candidates.extxyz" in out
    summary = json.loads((folder / "explore.json").read_text())
    assert summary["runs"] == 2 and summary["steps_run"] == 80
    bad = run_command([str(BIN / "mlipstore"), "explore", "--gamma-lower", "5", "--gamma-upper",
               "2"], project, check=False)
    assert bad.returncode == 1 and "gamma_upper (2.0) must exceed gamma_lower" in bad.stderr
    bad = run_command([str(BIN / "mlipstore"), "explore", "--temperatures", "300K"], project,
                      check=False)
    assert bad.returncode == 2 and "'300K' is not a comma-separated list" in bad.stderr


@pytest.mark.parametrize("ensemble", ["nvt", "npt"])
def test_thermostats_and_barostat_run(project, ensemble):
    potential = Potential.load(None, project / "models")
    s = settings(ensemble=ensemble, steps=30, trajectories=2, temperatures_K=[600.0],
                 pressures_GPa=[0.0, 5.0], gamma_upper=1000.0)
    result = explore(potential, pick_starts(project / "data" / "store", s), s, workers=2)
    assert [run.steps_run for run in result.runs] == [30, 30], \
        [run.stopped for run in result.runs]
    pressures = [run.pressure_GPa for run in result.runs]
    assert pressures == ([0.0, 5.0] if ensemble == "npt" else [None, None])
