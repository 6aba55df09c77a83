"""Bad input: a clear error naming file, frame and reason; non-zero exit; store untouched."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest

from helpers import DFT, cli, emt_frames, needs_shared, tree_digest
from mlipstore.store.filters import ScanFilter
from mlipstore.store.store import Store


def _nan_forces(path):
    frames = emt_frames(3, seed=1)
    frames[1].calc.results["forces"][0, 1] = np.nan
    ase.io.write(path, frames, format="extxyz")


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _empty(path):
    path.write_bytes(b"")


def _no_energy(path):
    atoms = emt_frames(1)[0]
    forces = atoms.get_forces()
    atoms.calc = None
    atoms.arrays["forces"] = forces
    ase.io.write(path, atoms, format="extxyz")


def _wrong_count(path):
    ase.io.write(path, emt_frames(2), format="extxyz")
    lines = path.read_text().splitlines()
    lines[0] = str(int(lines[0]) + 2)  # header claims two atoms more than the block holds
    path.write_text("\n".join(lines) + "\n")


BAD = {
    "nan_forces.xyz": (_nan_forces, "frame 1: forces contains non-finite values"),
    "random.xyz": (_random_bytes, "not UTF-8 text"),
    "empty.xyz": (_empty, "empty"),
    "no_energy.xyz": (_no_energy, "frame 0: no energy"),
    "wrong_count.xyz": (_wrong_count, "frame 1 does not start with its number of atoms"),
}


@pytest.fixture
def seeded_store(tmp_path, emt_xyz):
    store = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store, "--quiet")
    return store


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_rejected_and_store_unchanged(tmp_path, seeded_store, name):
    make, reason = BAD[name]
    bad = tmp_path / name
    make(bad)
    before = tree_digest(seeded_store)
    result = cli("ingest", bad, "--store", seeded_store, "--quiet", "--strict", expect=1)
    assert name in result.stderr and reason in result.stderr, result.stderr
    assert "nothing committed" in result.stdout
    assert tree_digest(seeded_store) == before


@needs_shared
@pytest.mark.parametrize("original", ["dpdata/tests/poscars/OUTCAR.h2o.md",
                                      "dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml",
                                      "dpdata/tests/qe.scf/02.out"])
def test_truncated_dft_output(tmp_path, seeded_store, original):
    """A cut run keeps its complete steps, marked unfinished (tests/test_interrupted.py
    cuts at many points); with --require-finished, or without one complete step, it is
    rejected whole and the store is unchanged."""
    data = (DFT / original).read_bytes()
    cut = tmp_path / f"cut_{(DFT / original).name}"
    cut.write_bytes(data[: len(data) * 2 // 3])
    before = tree_digest(seeded_store)
    result = cli("ingest", cut, "--store", seeded_store, "--quiet", "--require-finished",
                 expect=1)
    assert cut.name in result.stderr and "incomplete" in result.stderr
    assert tree_digest(seeded_store) == before
    result = cli("ingest", cut, "--store", seeded_store, "--quiet", expect=None)
    table = Store(seeded_store).scan(ScanFilter(run_finished=False))
    if result.exit_code:  # a single-step run cut in its step
        assert "cut before its first complete step" in result.stderr
        assert tree_digest(seeded_store) == before
        assert table.num_rows == 0
    else:
        assert table.num_rows > 0
        assert set(table.column("source_path").to_pylist()) == {str(cut)}
        total = Store(seeded_store).scan().num_rows
        for flag, rows in (("--unfinished-runs", table.num_rows),
                           ("--finished-runs", total - table.num_rows)):
            out = tmp_path / f"{flag}.pckl.gzip"
            result = cli("export", "--store", seeded_store, "-o", out, flag, "--quiet")
            assert result.output.startswith(f"wrote {rows} configurations"), flag


def test_mixed_call_commits_good_file_unless_strict(tmp_path, emt_xyz):
    bad = tmp_path / "nan.xyz"
    _nan_forces(bad)
    strict_store = tmp_path / "strict"
    result = cli("ingest", emt_xyz, bad, "--store", strict_store, "--strict", "--quiet",
                 expect=1)
    assert "nothing committed" in result.stdout
    assert not list(strict_store.glob("*.parquet"))

    store = tmp_path / "store"
    result = cli("ingest", emt_xyz, bad, "--store", store, "--quiet", expect=1)
    # 6 good frames plus frames 0 and 2 of the NaN file; frame 1 is rejected
    assert result.stdout.startswith("8 new, 0 duplicate, 1 rejected from 2 file(s); committed")
    assert json.loads(cli("info", "--store", store, "--json").stdout)["n_configs"] == 8


def test_missing_path_is_an_error(tmp_path):
    result = cli("ingest", tmp_path / "nope.xyz", "--store", tmp_path / "s", "--quiet", expect=1)
    assert "nope.xyz: no such file or directory" in result.stderr


def test_bad_key_map_is_a_usage_error(tmp_path, emt_xyz):
    result = cli("ingest", emt_xyz, "--store", tmp_path / "s", "--key-map", "enrgy=E", expect=2)
    assert "unknown quantity 'enrgy'" in result.stderr
