"""Helpers for tests that run the DVC pipeline in throw-away projects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

BIN = Path(sys.executable).parent
FAKE_BIN = Path(__file__).parent / "fake_bin"
DEMO = REPO / "data" / "raw" / "TiAl_tutorial.xyz"
# a small ACE basis for tests with the fake pacemaker (which writes the unfitted basis)
TINY_BASIS = {"training.ace_basis_config.number_of_functions_per_element": 10,
              "training.ace_basis_config.nradmax_by_orders": [6, 2, 1],
              "training.ace_basis_config.lmax_by_orders": [0, 1, 1]}
# a quick pipeline run with the fake pacemaker: that basis, a 40-structure selection
SMALL_FIT = {"select.n_structures": 40, "training.max_epochs": 4,
             "select.max_basis_functions": 200, **TINY_BASIS}


def env(fake: bool = True, **extra: str) -> dict:
    """Environment with mlipstore/dvc on PATH (and the fake pacemaker first if asked)."""
    path = [str(FAKE_BIN)] if fake else []
    e = dict(os.environ, PATH=os.pathsep.join([*path, str(BIN), os.environ["PATH"]]),
             GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.org",
             GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.org",
             DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, fake: bool = True, check: bool = True, timeout: int = 900,
        **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(fake, **extra), capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n" \
                                       f"{result.stderr[-4000:]}"
    return result


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` / `dvc exp run` ran, in order, but for ``validate``, which
    runs whenever params.yaml changes and changes nothing (tests/test_pipeline.py)."""
    return [line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '") and "'validate'" not in line]


def extxyz_frames(source: Path) -> list[str]:
    """The frames of an extxyz file, each as its text."""
    lines = source.read_text().splitlines(keepends=True)
    frames, i = [], 0
    while i < len(lines):
        n = int(lines[i])
        frames.append("".join(lines[i:i + n + 2]))
        i += n + 2
    return frames


def split_extxyz(source: Path, parts: list[tuple[Path, int, int]]) -> None:
    """Write frames [start, stop) of an extxyz file to each path, byte for byte."""
    frames = extxyz_frames(source)
    for path, start, stop in parts:
        path.write_text("".join(frames[start:stop]))


def new_project(root: Path, params: dict | None = None) -> Path:
    """`mlipstore init` a project; params override keys of params.yaml (dotted names)."""
    import yaml

    run([str(BIN / "mlipstore"), "init", str(root)], cwd=root.parent)
    if params:
        doc = yaml.safe_load((root / "params.yaml").read_text())
        for dotted, value in params.items():
            node = doc
            *parents, last = dotted.split(".")
            for key in parents:
                node = node[key]
            node[last] = value
        (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        run(["git", "commit", "-qam", "test params"], cwd=root)
    return root


def metrics(root: Path) -> dict:
    return json.loads((root / "metrics.json").read_text())
