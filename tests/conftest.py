"""Shared fixtures. Tests that need the real DFT files in ../shared skip visibly without them."""

from __future__ import annotations

import hashlib
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from click.testing import CliRunner

from mlipstore.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DFT = SHARED / "dft"
PACEMAKER_DATA = SHARED / "pacemaker"

needs_shared = pytest.mark.skipif(
    not DFT.is_dir(), reason=f"real DFT test data not found at {SHARED} (../shared is absent)")

# every file of ../shared/data/dft with the key map it needs
SHARED_FILES = {
    "ACEpotentials.jl/tutorials/TiAl_tutorial.xyz": "energy=energy,forces=force,virial=virial",
    "BOTNet-datasets/dataset_3BPA/train_300K.xyz": None,
    "dpdata/tests/poscars/OUTCAR.h2o.md": None,
    "dpdata/tests/poscars/Ti-O-Ti-v6/OUTCAR": None,
    "dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml": None,
    "dpdata/tests/qe.scf/02.out": None,
    "dpdata/tests/fhi_aims/out_scf": None,
    "q-e/test-suite/pw_md/benchmark.out.git.inp=md.in.args=1": None,
}


def emt_frames(n: int = 6, seed: int = 0, symbols: str = "Cu") -> list:
    """Small rattled fcc cells labelled by ASE's EMT calculator (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk(symbols, "fcc", a=3.6 + 0.02 * i, cubic=True).repeat((1, 1, 2))
        if symbols == "Cu" and i % 2:
            atoms.symbols[0] = "Au"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


@pytest.fixture
def emt_xyz(tmp_path: Path) -> Path:
    path = tmp_path / "raw" / "emt.extxyz"
    path.parent.mkdir()
    ase.io.write(path, emt_frames(), format="extxyz")
    return path


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below root: equal digests mean a byte-identical tree."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, expect: int | None = 0):
    """Run the mlipstore CLI in-process; assert the exit code unless expect is None."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output + result.stderr
    return result


def pytest_terminal_summary(terminalreporter):
    """Print the figures tests recorded (kills survived, inputs tried, fit errors, ...), so
    CI logs show them even when tests run in parallel workers."""
    figures = [value for report in terminalreporter.stats.get("passed", [])
               for name, value in getattr(report, "user_properties", []) if name == "figure"]
    if figures:
        terminalreporter.section("figures measured by the tests")
        for line in figures:
            terminalreporter.write_line(line)
