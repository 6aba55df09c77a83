"""Labelling: ASE calculators as oracles, local processes and a real Dask cluster, failed,
crashed and timed-out tasks, and the external route (DFT input folders)."""

from __future__ import annotations

import os
import signal
import time

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from mlipstore.pipeline.cycle import DFTResult
from mlipstore.pipeline.oracle import CalculatorOracle, label, write_dft_inputs


def structures(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.symbols[i % 4] = "Ni"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        out.append(atoms)
    return out


class SlowEMT(EMT):
    """EMT that takes ``delay_s`` per calculation (a stand-in for a DFT run)."""

    def __init__(self, delay_s: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.delay_s = delay_s

    def calculate(self, *args, **kwargs) -> None:
        time.sleep(self.delay_s)
        super().calculate(*args, **kwargs)


class CrashOnNi3(EMT):
    """Kills its own process on a structure with three Ni atoms (a segfaulting code)."""

    def calculate(self, atoms=None, *args, **kwargs) -> None:
        if atoms is not None and list(atoms.symbols).count("Ni") == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        super().calculate(atoms, *args, **kwargs)


def _expected(atoms) -> tuple[float, np.ndarray]:
    atoms = atoms.copy()
    atoms.calc = EMT()
    return atoms.get_potential_energy(), atoms.get_forces()


def test_calculator_oracle_labels_like_the_calculator():
    atoms = structures(1)[0]
    result = CalculatorOracle("ase.calculators.emt:EMT")(atoms)
    energy, forces = _expected(atoms)
    assert result.success and result.energy == energy
    np.testing.assert_array_equal(result.forces, forces)
    assert result.stress.shape == (6,)
    with pytest.raises(ValueError, match="no_such_factory"):
        CalculatorOracle("ase.calculators.emt:no_such_factory")
    with pytest.raises(ValueError, match="no_such_module"):
        CalculatorOracle("no_such_module:EMT")


def test_local_label_streams_results_and_fails_what_fails(tmp_path):
    good = structures(6)
    gold = bulk("Si", "diamond", a=5.43)  # EMT has no Si: the oracle raises
    results = dict(label([*good, gold], CalculatorOracle("ase.calculators.emt:EMT"),
                         workers=2))
    assert sorted(results) == list(range(7))
    for i, atoms in enumerate(good):
        energy, forces = _expected(atoms)
        assert results[i].success and results[i].energy == pytest.approx(energy, abs=1e-12)
        np.testing.assert_allclose(results[i].forces, forces, atol=1e-12)
    assert not results[6].success and "Si" in results[6].error


def test_timed_out_and_crashed_tasks_are_failed_results():
    slow = CalculatorOracle(f"{__name__}:SlowEMT", {"delay_s": 30})
    started = time.monotonic()
    results = dict(label(structures(2), slow, workers=2, timeout_s=1.0))
    assert time.monotonic() - started < 20
    assert [r.success for r in results.values()] == [False, False]
    assert all("timed out after 1 s" in r.error for r in results.values())

    crashing = CalculatorOracle(f"{__name__}:CrashOnNi3")
    atoms = structures(5)
    atoms[2].symbols[[0, 1, 2]] = "Ni"  # this one kills its process
    results = dict(label(atoms, crashing, workers=2))
    assert sorted(results) == list(range(5))
    assert not results[2].success and "labelling process died" in results[2].error
    assert all(results[i].success for i in (0, 1, 3, 4))


def test_dask_cluster_survives_a_killed_worker():
    """A real local Dask cluster (3 worker processes): one worker is killed mid-run; its
    tasks are rescheduled on the others and every structure is labelled, once."""
    distributed = pytest.importorskip("distributed")
    atoms = structures(12)
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        oracle = CalculatorOracle(f"{__name__}:SlowEMT", {"delay_s": 0.5})
        victim = next(iter(client.scheduler_info()["workers"]))
        pids = client.run(os.getpid)
        results: dict[int, DFTResult] = {}
        for index, result in label(atoms, oracle, client.get_executor(pure=False)):
            assert index not in results
            results[index] = result
            if len(results) == 2:  # mid-run: the others are queued or running
                os.kill(pids[victim], signal.SIGKILL)
        assert len(client.scheduler_info()["workers"]) <= 3
    assert sorted(results) == list(range(12))
    for i, a in enumerate(atoms):
        energy, forces = _expected(a)
        assert results[i].success, results[i].error
        assert results[i].energy == pytest.approx(energy, abs=1e-12)


def test_external_route_writes_input_folders(tmp_path):
    atoms = structures(3)
    atoms[1].info["gamma"] = 4.2
    folders = write_dft_inputs(atoms, tmp_path / "dft")
    assert [f.name for f in folders] == ["task_0000", "task_0001", "task_0002"]
    back = ase.io.read(folders[1] / "POSCAR", format="vasp")
    np.testing.assert_allclose(back.positions, atoms[1].positions, atol=1e-6)
    assert list(back.symbols) == list(atoms[1].symbols)
    assert ase.io.read(folders[1] / "structure.extxyz").info["gamma"] == 4.2
