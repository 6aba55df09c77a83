"""The active-learning loop: the external route with the fast fake pacemaker, and the
proof that it works (slow): an EMT-labelled Al-Ni alloy from 20 seed structures, trained
with the real pacemaker, tested on an independent high-temperature holdout set."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import time

import ase.io
import pytest
from ase.calculators.emt import EMT

from helpers import BIN, REPO, env, run
from mlipstore.store.store import Store

spec = importlib.util.spec_from_file_location("emt_loop", REPO / "examples" / "emt_loop.py")
emt_loop = importlib.util.module_from_spec(spec)
spec.loader.exec_module(emt_loop)

MLIPSTORE = str(BIN / "mlipstore")


def _project(root, settings: dict, fake: bool = True):
    """examples/emt_loop.py's project, made with this test's environment."""
    return emt_loop.make_project(root, settings, env(fake))


def test_external_route_writes_dft_inputs_and_cycle_brings_them_back(tmp_path):
    root = _project(tmp_path / "alni", {
        "loop.oracle": "external", "loop.holdout": None, "loop.generations": 2,
        "explore.steps": 60, "explore.trajectories": 2, "explore.gamma_lower": 0.2,
        "explore.gamma_upper": 1e6, "explore.collect_every_steps": 20,
        "training.max_epochs": 5})
    out = run([MLIPSTORE, "loop"], root).stdout
    assert "generation 01:" in out and "stopped: waiting for DFT" in out
    tasks = sorted((root / "explore" / "gen_01" / "dft").glob("task_*"))
    candidates = ase.io.read(root / "explore" / "gen_01" / "candidates.extxyz", ":")
    assert len(tasks) == len(candidates) > 0
    assert run(["git", "tag"], root).stdout.split() == ["gen-01"]
    assert run(["git", "status", "--porcelain"], root).stdout == ""  # inputs: ignored
    # "DFT" (EMT) in each folder, then the results come back through cycle
    for task in tasks:
        atoms = ase.io.read(task / "POSCAR")
        atoms.calc = EMT()
        atoms.get_potential_energy()
        ase.io.write(task / "result.extxyz", atoms, format="extxyz")
    run([MLIPSTORE, "cycle", *[str(t / "result.extxyz") for t in tasks]], root)
    out = run([MLIPSTORE, "loop"], root).stdout  # explores generation 2; it is the last
    assert "generation 02:" in out and "stopped: generation 02 reached" in out
    assert run(["git", "tag"], root).stdout.split() == ["gen-01", "gen-02"]
    loop = json.loads((root / "explore" / "loop.json").read_text())
    assert loop["generation"] == 2
    store = Store(root / "data" / "store").scan(columns=["id"]).column("id").to_pylist()
    assert len(store) == len(set(store)) == 20 + len(tasks)


@pytest.mark.slow
@pytest.mark.skipif(not shutil.which("pacemaker", path=str(BIN)),
                    reason="pacemaker (python-ace) is not installed")
def test_emt_loop_converges_and_resumes_after_a_kill(tmp_path, record_property):
    """Three generations with the real pacemaker; killed while labelling generation 1's
    candidates and run again. The holdout set is EMT MD at 1200 K of 32-atom cells,
    never trained on."""
    root = _project(tmp_path / "alni", {"loop.generations": 3}, fake=False)
    labels = root / "explore" / "gen_01" / "labels"
    proc = subprocess.Popen([MLIPSTORE, "loop"], cwd=root, env=env(False),
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not (labels.is_dir() and any(labels.iterdir())):
        assert proc.poll() is None and time.time() < deadline, "labelling never started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in labels.iterdir()}
    assert 0 < len(done_before) < 20

    out = run([MLIPSTORE, "loop"], root, fake=False, timeout=2400).stdout
    assert "stopped: generation 03 reached" in out
    # labels finished before the kill were kept, not redone
    assert all((labels / name).stat().st_mtime_ns == t for name, t in done_before.items())
    assert run(["git", "tag"], root).stdout.split() == ["gen-01", "gen-02", "gen-03"]
    history = [json.loads((root / "explore" / f"gen_{g:02d}" / "explore.json").read_text())
               | {"holdout": json.loads((root / "explore" / f"gen_{g:02d}" /
                                         "holdout.json").read_text())} for g in (1, 2, 3)]
    energy = [h["holdout"]["energy_rmse"] for h in history]
    forces = [h["holdout"]["forces_rmse"] for h in history]
    above = [h["fraction_above_lower"] for h in history]
    stable = [h["stable_time_ps"]["mean"] for h in history]
    record_property("figure", f"killed after {len(done_before)} of 20 labels; "
                    f"holdout energy RMSE {[round(e, 1) for e in energy]} meV/atom, "
                    f"forces {[round(f, 1) for f in forces]} meV/Å, steps above gamma_lower "
                    f"{[round(a, 3) for a in above]}, stable time {stable} ps")
    assert energy[-1] < energy[0] and forces[-1] < forces[0]
    assert all(b < 1.25 * a for a, b in zip(forces[:-1], forces[1:], strict=True))
    assert above[-1] < above[0] and stable[-1] > stable[0]
    ids = Store(root / "data" / "store").scan(columns=["id"]).column("id").to_pylist()
    assert len(ids) == len(set(ids))
    diff = run(["dvc", "metrics", "diff", "gen-01", "gen-03", "--targets",
                "explore/loop.json"], root, fake=False).stdout
    assert "holdout.forces_rmse" in diff and "explore.stable_time_ps" in diff
