"""Export: pacemaker's columns, the free-energy rule, reference energies, reproducible bytes."""

from __future__ import annotations

import ase
import ase.io
import numpy as np
import pandas as pd

from helpers import cli, emt_frames


def _export(store, out, *args, expect=0):
    return cli("export", "--store", store, "-o", out, "--quiet", *args, expect=expect)


def test_columns_and_free_energy_rule(tmp_path):
    frames = emt_frames(4)
    for i, atoms in enumerate(frames):  # a code reporting a free energy that differs
        atoms.calc.results["free_energy"] = atoms.calc.results["energy"] - 0.1 * (i + 1)
    del frames[0].calc.results["free_energy"]
    raw = tmp_path / "x.xyz"
    ase.io.write(raw, frames, format="extxyz")
    store = tmp_path / "store"
    cli("ingest", raw, "--store", store, "--quiet")
    out = tmp_path / "data.pckl.gzip"
    _export(store, out)
    df = pd.read_pickle(out, compression="gzip")
    assert list(df.columns) == ["name", "ase_atoms", "energy", "forces", "energy_corrected",
                                "stress"]
    assert df["energy"][0] == frames[0].calc.results["energy"]
    for i in (1, 2, 3):
        assert df["energy"][i] == frames[i].calc.results["free_energy"]
    assert df["name"].is_unique and all(len(n) == 32 for n in df["name"])
    assert df.attrs["mlipstore"]["reference_energies"] == {}


def test_reference_energies_define_energy_corrected(tmp_path, emt_xyz):
    store = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store, "--quiet")
    out = tmp_path / "data.pckl.gzip"
    _export(store, out, "--reference-energy", "Cu=-1.5", "--reference-energy", "Au=-2.25")
    df = pd.read_pickle(out, compression="gzip")
    for _, row in df.iterrows():
        symbols = row["ase_atoms"].get_chemical_symbols()
        offset = -1.5 * symbols.count("Cu") - 2.25 * symbols.count("Au")
        assert np.isclose(row["energy_corrected"], row["energy"] - offset, rtol=0, atol=1e-12)
    assert df.attrs["mlipstore"]["reference_energies"] == {"Cu": -1.5, "Au": -2.25}

    missing = _export(store, tmp_path / "m.pckl.gzip", "--reference-energy", "Cu=-1.5",
                      expect=1)
    assert "no reference energy for Au" in missing.stderr
    assert not (tmp_path / "m.pckl.gzip").exists()


def test_export_is_reproducible_and_filtered(tmp_path, emt_xyz):
    store = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store, "--quiet")
    a, b = tmp_path / "a.pckl.gzip", tmp_path / "b.pckl.gzip"
    _export(store, a)
    _export(store, b)
    assert a.read_bytes() == b.read_bytes()  # same data, same bytes, same DVC hash

    only_cu = tmp_path / "cu.pckl.gzip"
    result = _export(store, only_cu, "--elements", "Cu")
    assert "wrote 3 configurations" in result.stdout
    df = pd.read_pickle(only_cu, compression="gzip")
    assert all(set(a.get_chemical_symbols()) == {"Cu"} for a in df["ase_atoms"])

    none = _export(store, tmp_path / "none.pckl.gzip", "--max-atoms", "1", expect=1)
    assert "nothing to export" in none.stderr


def test_binary_input_round_trips_bit_for_bit(tmp_path):
    frames = emt_frames(3)
    raw = tmp_path / "x.traj"  # ASE trajectory: binary, so nothing is lost on the way in
    ase.io.write(raw, frames)
    store = tmp_path / "store"
    cli("ingest", raw, "--store", store, "--quiet")
    out = tmp_path / "d.pckl.gzip"
    _export(store, out)
    df = pd.read_pickle(out, compression="gzip")
    for atoms, (_, row) in zip(frames, df.iterrows(), strict=True):
        assert np.array_equal(row["stress"], atoms.get_stress())
        assert np.array_equal(row["forces"], atoms.get_forces())
        assert np.array_equal(row["ase_atoms"].positions, atoms.positions)
        assert row["energy"] == atoms.calc.results["free_energy"]


def test_fast_atoms_equal_constructed_ones_and_survive_pickling():
    import pickle

    from mlipstore.training.export import atoms_builder

    build = atoms_builder()
    for atoms in emt_frames(3) + [ase.Atoms("H2O", positions=np.eye(3), pbc=False)]:
        made = build(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)
        assert made == atoms and vars(made).keys() == vars(atoms).keys()
        assert made.get_chemical_formula() == atoms.get_chemical_formula()
        assert np.array_equal(made.cell.array, atoms.cell.array)
        again = pickle.loads(pickle.dumps(made))
        assert again == atoms and again.arrays["numbers"].dtype == np.int64
        made.positions[0] += 1.0  # its own arrays: the source is not changed
        assert made != atoms


def test_exported_files_get_the_umask_mode(tmp_path, emt_xyz):
    """Not mkstemp's private 0600: every file the project writes follows the umask."""
    import os
    import stat

    store = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store, "--quiet")
    old = os.umask(0o022)
    try:
        for fmt, name in (("pacemaker", "a.pckl.gzip"), ("extxyz", "a.extxyz")):
            out = tmp_path / name
            cli("export", "--store", store, "-o", out, "--format", fmt, "--quiet")
            assert stat.S_IMODE(out.stat().st_mode) == 0o644, fmt
        os.umask(0o077)
        cli("export", "--store", store, "-o", tmp_path / "private.pckl.gzip", "--quiet")
        assert stat.S_IMODE((tmp_path / "private.pckl.gzip").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_unknown_elements_are_refused_and_the_store_says_what_it_has(tmp_path, emt_xyz):
    store = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store, "--quiet")
    for bad in ("Xx", "cu,au"):
        result = cli("export", "--store", store, "-o", tmp_path / "x.pckl.gzip", "--elements",
                     bad, expect=2)
        assert "unknown element symbol(s)" in result.output and "case-sensitive" in result.output
    result = cli("export", "--store", store, "-o", tmp_path / "x.pckl.gzip", "--elements",
                 "Al", expect=1)
    assert "(the store has Au Cu elements)" in result.output
