"""Every real DFT file in ../shared ingests, and export gives back ASE's values bit for bit."""

from __future__ import annotations

import json
import shutil

import ase.io
import numpy as np
import pandas as pd
import pytest
from ase.stress import full_3x3_to_voigt_6_stress

from helpers import DFT, SHARED_FILES, cli, needs_shared, tree_digest

pytestmark = needs_shared


def ase_labels(atoms, key_map: str | None):
    """Energy (free-energy rule), forces and stress as ASE gives them, mapped by hand."""
    res = atoms.calc.results
    if key_map is None:
        energy = res.get("free_energy", res["energy"])
        return energy, res["forces"], res.get("stress")
    virial = atoms.info["virial"]  # TiAl: energy, force, virial
    stress = -full_3x3_to_voigt_6_stress(np.asarray(virial).reshape(3, 3)) / atoms.cell.volume
    return res["energy"], atoms.arrays["force"], stress


@pytest.mark.parametrize("relpath", sorted(SHARED_FILES))
def test_file_round_trips_bit_for_bit(tmp_path, relpath):
    source = DFT / relpath
    key_map = SHARED_FILES[relpath]
    frames = ase.io.read(source, index=":")
    store = tmp_path / "store"
    args = ["ingest", source, "--store", store, "--quiet"]
    cli(*args, *(["--key-map", key_map] if key_map else []))
    out = tmp_path / "export.pckl.gzip"
    cli("export", "--store", store, "-o", out, "--quiet")
    df = pd.read_pickle(out, compression="gzip")

    assert len(df) == len(frames)
    for atoms, (_, row) in zip(frames, df.iterrows(), strict=True):
        energy, forces, stress = ase_labels(atoms, key_map)
        exported = row["ase_atoms"]
        assert np.array_equal(exported.numbers, atoms.numbers)
        assert np.array_equal(exported.positions, atoms.positions)
        assert np.array_equal(exported.cell.array, atoms.cell.array)
        assert np.array_equal(exported.pbc, atoms.pbc)
        assert row["energy"] == energy  # exact: no float reformatting anywhere
        assert row["energy_corrected"] == energy
        assert np.array_equal(row["forces"], forces)
        if stress is None:
            assert row["stress"] is None
        else:
            assert np.array_equal(row["stress"], stress)


def test_everything_ingests_and_reingest_adds_nothing(tmp_path):
    store = tmp_path / "store"
    tial = DFT / "ACEpotentials.jl/tutorials/TiAl_tutorial.xyz"
    others = [DFT / p for p, km in SHARED_FILES.items() if km is None]
    expected = sum(len(ase.io.read(p, index=":")) for p in [tial, *others])

    cli("ingest", *others, "--store", store, "--quiet", "--tag", "shared")
    cli("ingest", tial, "--store", store, "--quiet", "--key-map", SHARED_FILES[str(
        tial.relative_to(DFT))])
    info = json.loads(cli("info", "--store", store, "--json").stdout)
    assert info["n_configs"] == expected
    assert info["elements"] == sorted(info["elements"])
    assert set(info["elements"]) == {"Al", "B", "C", "H", "N", "O", "Si", "Ti"}
    assert info["n_shards"] == 2

    before = tree_digest(store)
    again = cli("ingest", *others, "--store", store, "--quiet")
    assert again.stdout.startswith("0 new, ")
    cli("ingest", tial, "--store", store, "--quiet", "--key-map", "forces=force")
    assert tree_digest(store) == before


def test_directory_ingest_is_recursive_and_skips_non_dft_files(tmp_path):
    raw = tmp_path / "raw"
    shutil.copytree(DFT / "dpdata", raw)
    (raw / "notes.txt").write_text("INCAR settings: ENCUT = 520\n")
    store = tmp_path / "store"
    result = cli("ingest", raw, "--store", store, "--quiet")
    assert result.stdout.startswith("16 new, 0 duplicate, 0 rejected from 5 file(s)")
