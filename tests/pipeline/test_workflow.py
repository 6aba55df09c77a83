"""The training cycle: three generations on real DFT data in batches, a killed training
that resumes, and extrapolation screening with the real pace_activeset and pyace."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import ase.io
import numpy as np
import pytest

from helpers import BIN, DEMO, TINY_BASIS, env, new_project, run, split_extxyz
from mlipstore.ingestion.formats import iread
from mlipstore.pipeline.cycle import CycleState, DFTResult, TrainingCycle
from mlipstore.potentials.registry import list_potentials
from mlipstore.potentials.screening import read_candidates, screen
from mlipstore.store.configuration import Configuration, KeyMap
from mlipstore.store.store import Store

SMALL = {"select.method": "none", "training.max_epochs": 3, **TINY_BASIS}
TIAL = KeyMap.parse("forces=force,virial=virial")


def demo_results(start: int, stop: int) -> list[DFTResult]:
    out = []
    for frame in iread(DEMO, key_map=TIAL):
        if start <= frame.index < stop:
            c = frame.config
            out.append(DFTResult(c.to_atoms(), c.energy, c.forces, c.stress))
    return out


@pytest.fixture
def fake_pacemaker(monkeypatch):
    monkeypatch.setenv("PATH", env()["PATH"])
    for key in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME",
                "GIT_COMMITTER_EMAIL"):
        monkeypatch.setenv(key, env()[key])


def test_three_generations_and_screening(tmp_path, fake_pacemaker, record_property):
    root = new_project(tmp_path / "loop", SMALL)
    phase = TrainingCycle(root)
    batches = [demo_results(0, 40), demo_results(40, 80), demo_results(80, 120)]
    batches[1][3] = DFTResult(batches[1][3].atoms, success=False, error="SCF not converged")
    batches[1][7].forces = np.full_like(batches[1][7].forces, np.nan)  # came back broken
    batches[1][9] = DFTResult(batches[1][9].atoms, success=False, error="walltime")

    sizes = []
    for batch in batches:
        potential = phase.run(batch)
        sizes.append(Store(root / "data" / "store").scan(columns=["id"]).num_rows)
        assert potential.meta["store"]["content_hash"] == Store(
            root / "data" / "store").content_hash()
    assert sizes == [40, 40 + 37, 40 + 37 + 40]  # exactly the successful results

    state = CycleState.load(root / "workflow_state.yaml")
    assert state.generation == 3
    assert state.current_potential == "models/potential_gen_03.yace"
    assert [h["added"] for h in state.history] == [40, 37, 40]
    assert [h["failed"] for h in state.history] == [0, 3, 0]
    assert state.dataset_hash == Store(root / "data" / "store").content_hash()
    assert [p.generation for p in list_potentials(root / "models")] == [1, 2, 3]
    tags = Store(root / "data" / "store").info()["tags"]
    assert tags == {"gen_01": 40, "gen_02": 37, "gen_03": 40}

    diff = json.loads(run(["dvc", "metrics", "diff", "gen-01", "gen-03", "--json"],
                          root).stdout)
    assert diff["metrics.json"]["generation"] == {"old": 1, "new": 3, "diff": 2}
    assert "test.energy_rmse" in diff["metrics.json"]

    # screening: training structures interpolate, distorted ones extrapolate
    gen3 = list_potentials(root / "models")[-1]
    train_ids = set(gen3.meta["train"]["ids"])
    trained = [r.atoms for r in batches[2]
               if Configuration.from_atoms(r.labelled()).id in train_ids][:8]
    squeezed = []
    for k, atoms in enumerate(trained[:4]):
        atoms = atoms.copy()
        atoms.set_cell(atoms.cell * 0.75, scale_atoms=True)
        atoms.rattle(0.3, seed=k)
        squeezed.append(atoms)
    candidates = tmp_path / "candidates.xyz"
    ase.io.write(candidates, trained + squeezed, format="extxyz")
    pool = read_candidates([candidates])
    chosen = screen(gen3, pool, threshold=1.0).chosen
    grades = {c.frame: c.gamma for c in chosen}
    record_property("figure", (
        "screening: gamma of trained structures "
        f"{[round(float(c.gamma), 3) for c in pool[:8]]}, of distorted ones "
        f"{[round(float(c.gamma), 1) for c in pool[8:]]}"))
    assert set(grades) == {8, 9, 10, 11}  # only the distorted ones, none of the trained
    assert list(grades.values()) == sorted(grades.values(), reverse=True)
    out = run([str(BIN / "mlipstore"), "screen", str(candidates), "--potential", "gen_03",
               "--d-optimal", "2", "-o", str(tmp_path / "next_dft.xyz")], root).stdout
    assert "4 of 12 structures above gamma 1.0" in out  # all above, before thinning
    picked = ase.io.read(tmp_path / "next_dft.xyz", ":")
    assert 0 < len(picked) <= 2 and all(a.info["gamma"] > 1 for a in picked)
    assert f"kept {len(picked)} of them, chosen D-optimally" in out


def test_killed_training_leaves_state_and_resumes(tmp_path):
    root = new_project(tmp_path / "loop", SMALL)
    first, second = tmp_path / "a_TiAl_tutorial.xyz", tmp_path / "b_TiAl_tutorial.xyz"
    split_extxyz(DEMO, [(first, 0, 30), (second, 30, 60)])
    mlipstore = str(BIN / "mlipstore")
    run([mlipstore, "cycle", str(first)], root)
    state_before = (root / "workflow_state.yaml").read_bytes()
    models_before = sorted(p.name for p in (root / "models").iterdir())

    started = tmp_path / "fit-started"
    proc = subprocess.Popen(
        [mlipstore, "cycle", str(second)], cwd=root, start_new_session=True,
        env=env(FAKE_PACEMAKER_SLEEP="120", FAKE_PACEMAKER_STARTED=str(started)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not started.exists():
        assert proc.poll() is None and time.time() < deadline, "training never started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the cycle, dvc and pacemaker, mid-training
    proc.wait()

    assert (root / "workflow_state.yaml").read_bytes() == state_before
    assert sorted(p.name for p in (root / "models").iterdir()) == models_before

    out = run([mlipstore, "cycle", str(second)], root).stdout
    assert "generation 02: 30 new result(s)" in out
    state = CycleState.load(root / "workflow_state.yaml")
    assert state.generation == 2 and [h["added"] for h in state.history] == [30, 30]
    assert Store(root / "data" / "store").scan(columns=["id"]).num_rows == 60


def test_cycle_commits_the_generation_only_and_moves_no_tag(tmp_path):
    root = new_project(tmp_path / "loop", SMALL)
    first, second = tmp_path / "a_TiAl_tutorial.xyz", tmp_path / "b_TiAl_tutorial.xyz"
    split_extxyz(DEMO, [(first, 0, 30), (second, 30, 60)])
    (root / "notes.txt").write_text("my notes\n")  # the user's, untracked
    (root / "dvc_plots").mkdir()  # what `dvc plots show` writes (not ignored)
    (root / "dvc_plots" / "index.html").write_text("<html></html>\n")
    (root / "draft.md").write_text("staged, for a commit of the user's own\n")
    run(["git", "add", "draft.md"], root)
    run(["git", "tag", "gen-02"], root)  # taken already: by the init commit
    fresh = run([str(BIN / "mlipstore"), "init", str(tmp_path / "fresh")], tmp_path)
    # init commits what it created: DVC's "You can now commit the changes" is not passed on
    assert "commit the changes" not in fresh.stdout + fresh.stderr
    init = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    mlipstore = str(BIN / "mlipstore")

    def committed() -> set[str]:
        return set(run(["git", "show", "--name-only", "--format=", "HEAD"],
                       root).stdout.split())

    def status() -> set[str]:
        return set(run(["git", "status", "--porcelain"], root).stdout.splitlines())

    said = run([mlipstore, "cycle", str(first)], root)
    said = said.stdout + said.stderr
    # DVC's own lines once, not again through mlipstore's logging
    assert said.count("Running stage 'train'") == 1, said
    files = committed()
    assert {"dvc.lock", "metrics.json", "workflow_state.yaml", "data/params_valid.txt",
            "data/.gitignore", "plots/energy_test.csv"} <= files
    assert any(f.startswith("data/raw/gen_01/") for f in files)
    assert not [f for f in files if f in ("notes.txt", "draft.md")
                or f.startswith("dvc_plots/")]
    # everything else of the generation is in the commit; the user's files are as they were
    assert status() == {"?? notes.txt", "?? dvc_plots/", "A  draft.md"}
    head = run(["git", "rev-parse", "HEAD"], root).stdout.strip()
    assert run(["git", "rev-parse", "gen-01^{commit}"], root).stdout.strip() == head

    result = run([mlipstore, "cycle", str(second)], root)
    assert "generation 02: 30 new result(s)" in result.stdout
    assert "not tagged: tag gen-02 already names commit" in result.stderr
    assert run(["git", "rev-parse", "gen-02^{commit}"], root).stdout.strip() == init
    assert run(["git", "log", "-1", "--format=%s"], root).stdout.strip() == \
        "mlipstore cycle: generation 02"
    assert any(f.startswith("data/raw/gen_02/") for f in committed())
    assert status() == {"?? notes.txt", "?? dvc_plots/", "A  draft.md"}
