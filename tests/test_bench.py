"""The benchmark stays runnable: its data is what ASE writes, and a tiny run completes with
every measure (timings are its business, not the tests')."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import ase
import ase.io
import pytest
from ase.calculators.singlepoint import SinglePointCalculator

from helpers import REPO

sys.path.insert(0, str(REPO / "bench"))
from generate import configurations, extxyz_frame  # noqa: E402


def test_generated_extxyz_is_byte_identical_to_ase_write():
    configs = list(configurations(20, seed=5))
    frames = []
    for c in configs:
        atoms = ase.Atoms(symbols=list(c["symbols"]), positions=c["positions"],
                          cell=c["cell"], pbc=True)
        atoms.calc = SinglePointCalculator(atoms, energy=c["energy"], forces=c["forces"],
                                           free_energy=c["free_energy"], stress=c["stress"])
        frames.append(atoms)
    expected = io.StringIO()
    ase.io.write(expected, frames, format="extxyz")
    assert "".join(map(extxyz_frame, configs)) == expected.getvalue()
    assert len({c["symbols"].tobytes() for c in configs}) == len(configs)


@pytest.mark.slow
def test_benchmark_runs_end_to_end(tmp_path):
    subprocess.run([sys.executable, str(REPO / "bench" / "run.py"), "--n", "60",
                    "--no-scaling", "--work", str(tmp_path / "work"),
                    "--out", str(tmp_path / "out")], check=True, capture_output=True)
    results = json.loads((tmp_path / "out" / "60.json").read_text())
    assert results["raw"]["filtered_rows"] > 0  # run.py checks ASE db agrees
    assert set(results["ratios"]) >= {"ingest_vs_ase_read", "db_insert_vs_ingest",
                                      "pandas_vs_export", "db_select_vs_scan",
                                      "store_vs_extxyz", "store_vs_db", "dvc_status_s",
                                      "push_fraction"}
    assert results["raw"]["push_new_objects"] >= 1
    assert "| ingest / ase.io.read (time) |" in (tmp_path / "out" / "60.md").read_text()
