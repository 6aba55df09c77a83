"""The DVC pipeline in throw-away projects (`mlipstore init`), with a fast fake pacemaker.

The real pacemaker runs the same pipeline in test_pipeline_real.py.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import yaml
from ase.build import bulk

from helpers import (
    BIN,
    DEMO,
    REPO,
    SMALL_FIT,
    import_closure,
    metrics,
    new_project,
    ran_stages,
    run,
    split_extxyz,
    tree_digest,
)
from mlipstore.cli import main
from mlipstore.layout import Layout
from mlipstore.params import Params, load_params
from mlipstore.pipeline.stages import run_stage
from mlipstore.potentials.registry import Potential, list_potentials
from mlipstore.project import template_text

METRIC_KEYS = {"energy_rmse", "energy_mae", "forces_rmse", "forces_mae", "n_structures"}


def test_pipeline_reproduces_compares_and_grows(tmp_path):
    root = new_project(tmp_path / "proj", SMALL_FIT)
    raw = root / "data" / "raw"
    split_extxyz(DEMO, [(raw / "a_TiAl_tutorial.xyz", 0, 120)])
    later = tmp_path / "b_TiAl_tutorial.xyz"
    split_extxyz(DEMO, [(later, 120, 160)])
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "data"], root)

    # a fresh project: dvc repro runs every stage and registers generation 01
    out = run(["dvc", "repro"], root).stdout
    assert ran_stages(out) == ["ingest", "export", "select", "train"]
    assert "120 new, 0 duplicate, 0 rejected from 1 file(s)" in out
    gen1 = root / "models" / "potential_gen_01.yace"
    assert gen1.exists() and gen1.with_suffix(".asi").exists()
    m = metrics(root)
    assert m["generation"] == 1 and set(m["train"]) == set(m["test"]) == METRIC_KEYS
    export = json.loads((root / "data" / "export" / "export.json").read_text())
    assert m["train"]["n_structures"] <= 40 and m["test"]["n_structures"] == export["n_test"]
    lineage = json.loads(gen1.with_suffix(".json").read_text())
    assert lineage["params"] == load_params(root / "params.yaml").model_dump(mode="json")
    assert lineage["store"]["content_hash"] == export["store_content_hash"]
    assert len(lineage["train"]["ids"]) == m["train"]["n_structures"]
    assert not set(lineage["train"]["ids"]) & set(lineage["test"]["ids"])
    assert yaml.safe_load(lineage["input_yaml"])["fit"]["maxiter"] == 4
    assert lineage["git"]["commit"] and lineage["versions"]["python-ace"] == "0.4.0rc1"

    # nothing changed: nothing runs, status is clean
    assert ran_stages(run(["dvc", "repro"], root).stdout) == []
    assert json.loads(run(["dvc", "status", "--json"], root).stdout) == {}
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "generation 1"], root)

    # a training hyperparameter: only train re-runs, and metrics diff shows the change;
    # same data, so generation 01 is retrained in place, not a new generation
    out = run(["dvc", "exp", "run", "-S", "training.max_epochs=25"], root).stdout
    assert ran_stages(out) == ["train"]
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], root).stdout)
    changed = diff["metrics.json"]
    assert changed["train.energy_rmse"]["new"] < changed["train.energy_rmse"]["old"]
    assert "generation" not in changed and metrics(root)["generation"] == 1
    assert [p.generation for p in list_potentials(root / "models")] == [1]

    # pacemaker's fitting features are training keys: only train re-runs for them too
    for setting in ("training.weighting.policy=energy_based", "training.ladder_step=5",
                    "training.loss_weights.kappa=auto"):
        out = run(["dvc", "exp", "run", "-S", setting], root).stdout
        assert ran_stages(out) == ["train"], setting
    lineage = json.loads(gen1.with_suffix(".json").read_text())
    assert yaml.safe_load(lineage["input_yaml"])["fit"]["loss"]["kappa"] == "auto"

    # a selection key: select and train re-run, ingest and export do not
    out = run(["dvc", "exp", "run", "-S", "select.n_structures=30"], root).stdout
    assert ran_stages(out) == ["select", "train"]

    # a new DFT file in the inbox: only it is ingested, and generation 02 appears,
    # warm-started from generation 01
    run([str(BIN / "mlipstore"), "add", str(later)], root)
    out = run(["dvc", "repro"], root).stdout
    assert ran_stages(out)[0] == "ingest"
    assert "40 new, 0 duplicate, 0 rejected from 1 file(s)" in out
    assert "1 file(s) already ingested" in out
    generations = [p.generation for p in list_potentials(root / "models")]
    assert generations == [1, 2]
    assert Potential.load(2, root / "models").meta["initial_potential"]["parent"][
        "generation"] == 1
    old = Potential.load(1, root / "models")
    atoms = bulk("Al", "fcc", a=4.05) * (2, 2, 2)
    atoms.symbols[:3] = "Ti"
    atoms.calc = old.calculator()
    assert np.isfinite(atoms.get_potential_energy()) and np.isfinite(atoms.get_forces()).all()
    listing = run([str(BIN / "mlipstore"), "potentials", "--json"], root).stdout
    assert [row["generation"] for row in json.loads(listing)] == [1, 2]


def test_failed_fit_registers_nothing(tmp_path):
    root = new_project(tmp_path / "proj", SMALL_FIT)
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl_tutorial.xyz", 0, 60)])
    for stage in ("ingest", "export", "select"):
        run([str(BIN / "mlipstore"), "stage", stage, "--quiet"], root)
    failed = run([str(BIN / "mlipstore"), "stage", "train", "--quiet"], root, check=False,
                 FAKE_PACEMAKER_FAIL="1")
    assert failed.returncode == 1
    assert "pacemaker failed with exit status 3" in failed.stderr
    assert "simulated crash" in failed.stderr
    assert list_potentials(root / "models") == [] and not (root / "metrics.json").exists()


def test_bad_params_name_the_key(tmp_path):
    root = new_project(tmp_path / "proj", {"training.loss_weights.stress": 0.5})
    result = run([str(BIN / "mlipstore"), "stage", "export"], root, check=False)
    assert result.returncode == 1
    assert "training.loss_weights.stress = 0.5" in result.stderr
    assert "no stress term" in result.stderr


def test_a_typo_anywhere_in_params_fails_before_anything_is_removed(tmp_path):
    root = new_project(tmp_path / "proj", SMALL_FIT)
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl_tutorial.xyz", 0, 60)])
    run(["dvc", "repro"], root)
    outputs = ["metrics.json", "plots", "data/export", "data/selection/selected.json"]
    before = {name: tree_digest(root / name) if (root / name).is_dir()
              else (root / name).read_bytes() for name in outputs}
    good = (root / "params.yaml").read_text()
    for bad, named in ((good + "selct:\n  method: random\n", "selct: unknown key"),
                       (good.replace("max_epochs:", "max_epochs: -1 #"),
                        "training.max_epochs = -1"),
                       (good.replace("test_fraction: 0.1", "test_fraction: 2"),
                        "split.test_fraction = 2")):
        (root / "params.yaml").write_text(bad)
        result = run(["dvc", "repro"], root, check=False)
        assert result.returncode != 0
        assert named in result.stdout + result.stderr
        assert "Running stage 'validate'" in result.stdout
        assert not {"ingest", "export", "select", "train"} & set(ran_stages(result.stdout))
        after = {name: tree_digest(root / name) if (root / name).is_dir()
                 else (root / name).read_bytes() for name in outputs}
        assert after == before, named
    (root / "params.yaml").write_text(good)
    out = run(["dvc", "repro"], root).stdout
    assert ran_stages(out) == []  # the marker is the same: nothing after it re-runs


def test_repo_pipeline_is_the_template():
    """`mlipstore init` scaffolds exactly this repository's pipeline (its dvc.yaml adds
    only the code each stage runs as dependencies)."""
    ours = yaml.safe_load((REPO / "dvc.yaml").read_text())
    template = yaml.safe_load(template_text("dvc.yaml"))
    for name, stage in ours["stages"].items():
        code = [d for d in stage["deps"] if d.split("/")[0] == "mlipstore"]
        assert code, f"stage {name} lists no code dependency"
        stage["deps"] = [d for d in stage["deps"] if d not in code]
    assert ours == template
    assert (REPO / "params.yaml").read_text() == template_text("params.yaml")
    assert load_params(REPO / "params.yaml").training == Params().training


def test_every_path_is_the_layouts():
    """The paths dvc.yaml names and the command line's defaults are Layout's (defined once
    in Python; dvc.yaml cannot import them, so this test keeps them equal)."""
    layout = Layout()
    stages = yaml.safe_load(template_text("dvc.yaml"))["stages"]
    outs = {o if isinstance(o, str) else next(iter(o))
            for s in stages.values() for o in [*s.get("outs", []), *s.get("metrics", [])]}
    deps = {d for s in stages.values() for d in s["deps"]}
    assert outs == {str(p) for p in (layout.params_valid, layout.store, layout.export_dir,
                                     layout.selection, layout.models, layout.plots,
                                     layout.metrics)}
    assert {str(layout.inbox), str(layout.pool), str(layout.params_valid)} <= deps
    defaults = {p.name: p.default for c in main.commands.values() for p in c.params}
    assert defaults["store_dir"] == str(layout.store)
    assert defaults["models"] == str(layout.models)


def test_add_data_copies_files_and_writes_atoms(tmp_path):
    from helpers import emt_frames
    from mlipstore.params import IngestParams
    from mlipstore.pipeline.training_data import TrainingData

    params = Params(ingest=IngestParams(key_maps={"*TiAl*": "forces=force,virial=virial"}))
    builder = TrainingData(tmp_path, params)
    shutil.copy(DEMO, tmp_path / "TiAl_tutorial.xyz")
    first = builder.add_data([tmp_path / "TiAl_tutorial.xyz"])
    assert builder.add_data([tmp_path / "TiAl_tutorial.xyz"]) == first  # same file: reused
    written = builder.add_data(emt_frames(3))
    assert written[0].suffix == ".traj"
    report = builder.ingest()
    assert report.ok and report.new == 3 + 329


def _uncovered_code(dvc_yaml: dict) -> dict[str, list[str]]:
    """Per stage, the files of its code (the import closure of the module that holds the
    stage functions) that no dependency of the stage covers (the file or a folder above)."""
    code = import_closure(run_stage.__module__)
    missing = {}
    for name, stage in dvc_yaml["stages"].items():
        deps = [d.rstrip("/") for d in stage["deps"]]
        left = sorted(f for f in code
                      if not any(f == d or f.startswith(d + "/") for d in deps))
        if left:
            missing[name] = left
    return missing


def test_stage_code_dependencies_cover_what_the_stages_import():
    """A change of any code a stage can run re-runs it: dvc.yaml's code dependencies cover
    the import closure of the stage functions' module (a hand-kept list had drifted:
    export lacked reference.py, the baseline it subtracts)."""
    ours = yaml.safe_load((REPO / "dvc.yaml").read_text())
    closure = import_closure(run_stage.__module__)
    assert {"mlipstore/training/reference.py", "mlipstore/params.py",
            "mlipstore/training/export.py", "mlipstore/training/pacemaker.py"} <= closure
    assert _uncovered_code(ours) == {}, "list the package folder in dvc.yaml"
    # a deliberately broken copy: the hand-kept lists of before
    broken = yaml.safe_load((REPO / "dvc.yaml").read_text())
    broken["stages"]["export"]["deps"] = [
        "mlipstore/training/export.py", "mlipstore/training/targets.py", "mlipstore/store",
        "mlipstore/training/split.py", "mlipstore/pipeline/training_data.py", "data/store"]
    missing = _uncovered_code(broken)
    assert list(missing) == ["export"] and "mlipstore/training/reference.py" in missing["export"]
    # compiled files do not count as code changes (Python versions write their own)
    assert "__pycache__/" in (REPO / ".dvcignore").read_text().split()
