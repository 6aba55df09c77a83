"""Exports for other trainers: extended XYZ for MACE / NequIP / Allegro (exact floats, key
names, weights) and the GRACE DataFrame (columns, weights, stress), plus the format table."""

from __future__ import annotations

import io
import math
from pathlib import Path

import ase
import ase.io
import numpy as np
import pandas as pd
import pytest
from ase.stress import full_3x3_to_voigt_6_stress

from helpers import REPO, cli
from mlipstore.store.store import Store
from mlipstore.training import trainers
from mlipstore.training.export import pacemaker_frame, write_pickle_gzip
from mlipstore.training.trainers import FORMATS, ExtxyzKeys, grace_frame, write_extxyz, write_grace

WEIGHT_COLUMNS = ("w_energy", "w_forces", "virial_weight")


def _frame(seed: int = 0, n_rows: int = 7) -> pd.DataFrame:
    """A pacemaker DataFrame of random full-precision values: periodic, partly periodic
    and molecular rows, rows without stress, NaN weights, ids that ASE would read as a
    number or a boolean."""
    rng = np.random.default_rng(seed)
    rows = []
    pbcs = ([True] * 3, [True, False, True], [False] * 3)
    for i in range(n_rows):
        n = 1 + i % 4
        pbc = pbcs[i % 3]
        cell = np.zeros((3, 3)) if not any(pbc) else \
            np.diag(rng.uniform(3, 9, 3)) + rng.normal(0, 0.3, (3, 3))
        atoms = ase.Atoms(numbers=rng.choice([13, 22, 1], n), positions=rng.normal(0, 3, (n, 3)),
                          cell=cell, pbc=pbc)
        energy = float(rng.normal(-1700, 50))
        rows.append({
            "name": f"{i:02d}" + "0123456789abcdef" * 2 if i != 1 else "T",
            "ase_atoms": atoms,
            "energy": energy,
            "forces": rng.normal(0, 1, (n, 3)),
            "energy_corrected": energy - float(rng.uniform(1000, 1500)),
            "stress": None if i in (1, 3, 4) else rng.normal(0, 0.01, 6),
            "w_energy": math.nan if i == 2 else float(rng.uniform(1e-3, 1e-2)),
            "w_forces": None if i == 4 else np.full(n, float(rng.uniform(1e-4, 1e-3))),
            "virial_weight": math.nan if i == 5 else float(rng.uniform(0.1, 2)),
            "tags": ["bulk", "md"] if i % 2 else [],
        })
    df = pd.DataFrame(rows)
    df.attrs["mlipstore"] = {"reference_energies": {"Al": -1.0, "Ti": -2.0, "H": -0.5},
                             "baseline": None}
    # the ids: 32 characters; the first is digits only, which ASE would read as an int
    df.loc[0, "name"] = "00123456789012345678901234567890"
    return df


def _read(path: Path) -> list[ase.Atoms]:
    return ase.io.read(path, index=":")


def _stress_missing(stress) -> bool:
    return stress is None or (isinstance(stress, float) and math.isnan(stress))


def test_extxyz_reads_back_bit_for_bit(tmp_path):
    df = _frame()
    path = tmp_path / "train.xyz"
    write_extxyz(df, path, weights="as_given")
    frames = _read(path)
    assert len(frames) == len(df)
    for row, atoms in zip(df.itertuples(), frames, strict=True):
        src = row.ase_atoms
        assert atoms.calc is None  # nothing was renamed into a calculator
        assert np.array_equal(atoms.numbers, src.numbers)
        assert np.array_equal(atoms.positions, src.positions)
        assert np.array_equal(atoms.cell.array, src.cell.array)
        assert np.array_equal(atoms.pbc, src.pbc)
        info = atoms.info
        assert info["REF_energy"] == row.energy_corrected
        assert info["REF_total_energy"] == row.energy
        assert np.array_equal(atoms.arrays["REF_forces"], row.forces)
        assert atoms.arrays["REF_forces"].dtype == np.float64
        if _stress_missing(row.stress):
            assert "REF_stress" not in info and "config_stress_weight" not in info
        else:
            assert info["REF_stress"].shape == (6,)
            assert np.array_equal(info["REF_stress"], row.stress)
        if math.isnan(row.w_energy):
            assert "config_energy_weight" not in info
        else:
            assert info["config_energy_weight"] == row.w_energy
        if row.w_forces is None:
            assert "config_forces_weight" not in info
        else:
            assert info["config_forces_weight"] == row.w_forces[0]
        if not _stress_missing(row.stress):
            if math.isnan(row.virial_weight):
                assert "config_stress_weight" not in info
            else:
                assert info["config_stress_weight"] == row.virial_weight
        assert info["mlipstore_id"] == row.name and isinstance(info["mlipstore_id"], str)
        if row.tags:
            assert info["config_type"] == "+".join(row.tags)
        else:
            assert "config_type" not in info
        assert not {"energy", "forces", "stress", "free_energy"} & set(info)
    assert frames[0].info["mlipstore_id"] == "00123456789012345678901234567890"
    assert frames[1].info["mlipstore_id"] == "T"


def test_ase_own_writer_would_not_be_exact(tmp_path):
    """The reason for the own writer: ASE's default %16.8f loses the last bits, which the
    comparison of the test above would catch."""
    df = _frame()
    buf = io.StringIO()
    ase.io.write(buf, list(df["ase_atoms"]), format="extxyz")
    buf.seek(0)
    again = ase.io.read(buf, index=":", format="extxyz")
    assert not all(np.array_equal(a.positions, b.positions)
                   for a, b in zip(again, df["ase_atoms"], strict=True))


def test_weights_rescaled_to_mean_one(tmp_path):
    df = _frame(seed=3, n_rows=9)
    path = tmp_path / "train.xyz"
    write_extxyz(df, path)  # weights="mean_one"
    frames = _read(path)
    for column, key in (("w_energy", "config_energy_weight"),
                        ("virial_weight", "config_stress_weight")):
        pairs = [(f.info[key], w) for f, w in zip(frames, df[column], strict=True) if key in f.info]
        assert len(pairs) >= 3
        written = np.array([p[0] for p in pairs])
        given = np.array([p[1] for p in pairs])
        assert np.mean(written) == pytest.approx(1.0, rel=1e-14)
        assert np.allclose(written / given, written[0] / given[0], rtol=1e-14, atol=0)
        assert not np.allclose(written, given)
    # force weights: mean 1 over atoms, not over structures
    pairs = [(f.info["config_forces_weight"], len(f)) for f in frames
             if "config_forces_weight" in f.info]
    assert sum(w * n for w, n in pairs) / sum(n for _, n in pairs) == pytest.approx(1.0, rel=1e-14)
    assert sum(w for w, _ in pairs) / len(pairs) != pytest.approx(1.0, rel=1e-6)


def test_no_weights_without_weight_columns_or_with_none(tmp_path):
    df = _frame()
    for frame, kwargs in ((df.drop(columns=list(WEIGHT_COLUMNS)), {}), (df, {"weights": "none"})):
        path = tmp_path / "train.xyz"
        write_extxyz(frame, path, **kwargs)
        for atoms in _read(path):
            assert not any(k.startswith("config_") and k.endswith("_weight") for k in atoms.info)
            assert "REF_energy" in atoms.info
    with pytest.raises(ValueError, match="weights="):
        write_extxyz(df, tmp_path / "x.xyz", weights="normalised")


def test_per_atom_force_weights_must_be_constant_for_mace(tmp_path):
    df = _frame()
    df.at[3, "w_forces"] = np.linspace(0.1, 0.4, len(df.at[3, "ase_atoms"]))
    path = tmp_path / "train.xyz"
    with pytest.raises(ValueError, match="config_forces_weight is one number per structure"):
        write_extxyz(df, path)
    assert not path.exists()
    write_extxyz(df, path, weights="none")  # the way out the message names
    assert len(_read(path)) == len(df)


def test_custom_keys(tmp_path):
    keys = ExtxyzKeys(energy_key="dft_energy", forces_key="dft_forces", stress_key="dft_stress",
                      total_energy_key=None, energy_weight_key="ew", forces_weight_key="fw",
                      stress_weight_key="sw", config_type_key="kind", id_key="uid_")
    df = _frame()
    path = tmp_path / "train.xyz"
    write_extxyz(df, path, keys, weights="as_given")
    frames = _read(path)
    for row, atoms in zip(df.itertuples(), frames, strict=True):
        assert atoms.info["dft_energy"] == row.energy_corrected
        assert np.array_equal(atoms.arrays["dft_forces"], row.forces)
        assert set(atoms.arrays) == {"numbers", "positions", "dft_forces"}
        assert atoms.info["uid_"] == row.name
        if not _stress_missing(row.stress):
            assert np.array_equal(atoms.info["dft_stress"], row.stress)
        assert not any(k.startswith("REF_") or k.startswith("config_") for k in atoms.info)
    assert frames[0].info["ew"] == df["w_energy"][0]
    assert frames[1].info["kind"] == "bulk+md"


@pytest.mark.parametrize("kwargs", [{"energy_key": "energy"}, {"forces_key": "forces"},
                                    {"stress_key": "stress"}, {"energy_key": "virial"},
                                    {"id_key": "pbc"}, {"energy_key": "has space"},
                                    {"forces_key": "REF_energy"}])
def test_keys_that_ase_would_misread_are_refused(kwargs):
    with pytest.raises(ValueError, match="ExtxyzKeys"):
        ExtxyzKeys(**kwargs)


def test_missing_labels_leave_keys_out(tmp_path):
    df = _frame()
    df.at[0, "energy_corrected"] = math.nan
    df.at[0, "energy"] = math.nan
    df.at[2, "forces"] = np.full((len(df.at[2, "ase_atoms"]), 3), np.nan)
    df.at[3, "stress"] = np.full(6, np.nan)
    path = tmp_path / "train.xyz"
    write_extxyz(df, path)
    frames = _read(path)
    assert not {"REF_energy", "REF_total_energy", "config_energy_weight"} & set(frames[0].info)
    assert "REF_forces" not in frames[2].arrays and "config_forces_weight" not in frames[2].info
    assert "REF_stress" not in frames[3].info and "config_stress_weight" not in frames[3].info
    df.at[4, "forces"] = np.where(np.arange(3) == 1, np.nan, df.at[4, "forces"])
    with pytest.raises(ValueError, match="some atoms only"):
        write_extxyz(df, tmp_path / "bad.xyz")


def test_no_total_energy_with_a_baseline(tmp_path):
    df = _frame()
    df["energy_baseline"] = 1.5
    path = tmp_path / "train.xyz"
    write_extxyz(df, path)
    assert all("REF_total_energy" not in a.info and "REF_energy" in a.info for a in _read(path))
    df = _frame()
    df.attrs["mlipstore"]["baseline"] = {"kind": "zbl"}
    write_extxyz(df, path)
    assert all("REF_total_energy" not in a.info for a in _read(path))


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch):
    df = _frame()
    path = tmp_path / "train.xyz"
    write_extxyz(df, path)
    before = path.read_bytes()
    calls = []
    original = trainers._Frame.text

    def fail_on_third(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trainers._Frame, "text", fail_on_third)
    with pytest.raises(RuntimeError, match="disk full"):
        write_extxyz(df, path)
    assert path.read_bytes() == before  # the old file, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.xyz"]  # no temporary left
    fresh = tmp_path / "new.xyz"
    calls.clear()
    with pytest.raises(RuntimeError):
        write_extxyz(df, fresh)
    assert not fresh.exists()


def _demo_frame(n_frames: int = 6) -> pd.DataFrame:
    """The first frames of the repository's demo file as pacemaker_frame lays them out (key
    map forces=force, virial=virial: stress = -virial / volume, Voigt)."""
    frames = ase.io.read(REPO / "data" / "raw" / "TiAl_tutorial.xyz", index=f":{n_frames}")
    refs = {"Ti": -1.5, "Al": -0.25}
    rows = []
    for i, src in enumerate(frames):
        atoms = ase.Atoms(numbers=src.numbers, positions=src.positions, cell=src.cell,
                          pbc=src.pbc)
        energy = src.get_potential_energy()
        virial = src.info["virial"]
        rows.append({
            "name": f"demo{i}", "ase_atoms": atoms, "energy": energy,
            "forces": src.arrays["force"],
            "energy_corrected": energy - sum(refs[s] for s in atoms.get_chemical_symbols()),
            "stress": full_3x3_to_voigt_6_stress(-virial / atoms.get_volume()),
        })
    df = pd.DataFrame(rows)
    df.attrs["mlipstore"] = {"reference_energies": refs, "baseline": None}
    return df


def test_demo_data(tmp_path):
    df = _demo_frame()
    path = tmp_path / "train.xyz"
    write_extxyz(df, path)
    frames = _read(path)
    assert len(frames) == len(df) == 6
    for row, atoms in zip(df.itertuples(), frames, strict=True):
        assert np.array_equal(atoms.positions, row.ase_atoms.positions)
        assert np.array_equal(atoms.cell.array, row.ase_atoms.cell.array)
        assert atoms.info["REF_energy"] == row.energy_corrected != row.energy
        assert atoms.info["REF_total_energy"] == row.energy
        assert np.array_equal(atoms.arrays["REF_forces"], row.forces)
        assert np.array_equal(atoms.info["REF_stress"], row.stress)
        assert atoms.info["mlipstore_id"] == row.name
    g = grace_frame(df)
    assert "virial_weight" not in g.columns  # every demo frame has a stress
    assert all(np.array_equal(a, b) for a, b in zip(g["stress"], df["stress"], strict=True))


def test_weights_through_the_store(tmp_path):
    """Source weights (a pacemaker pickle) ingested, exported by pacemaker_frame, and
    written for MACE and GRACE: the same numbers come out."""
    source = _frame()
    pickle_path = tmp_path / "src.pckl.gzip"
    write_pickle_gzip(source.drop(columns=["tags"]), pickle_path)
    store = tmp_path / "store"
    cli("ingest", pickle_path, "--store", store, "--trust-pickle", "--quiet")
    df = pacemaker_frame(Store(store).scan())
    assert set(WEIGHT_COLUMNS) <= set(df.columns)
    assert set(source["w_energy"].dropna()) <= set(df["w_energy"])
    path = tmp_path / "train.xyz"
    write_extxyz(df, path, weights="as_given")
    frames = _read(path)
    g = grace_frame(df)
    for i, atoms in enumerate(frames):
        assert atoms.info["mlipstore_id"] == df["name"][i]
        assert atoms.info["REF_energy"] == df["energy_corrected"][i]
        assert atoms.info["config_energy_weight"] == df["w_energy"][i] == g["energy_weight"][i]
        assert atoms.info["config_forces_weight"] == df["w_forces"][i][0]
        assert np.array_equal(g["force_weight"][i], df["w_forces"][i])


# --- GRACE -------------------------------------------------------------------------------

def test_grace_frame_columns_values_and_weights():
    df = _frame()
    before = df.copy()
    g = grace_frame(df)
    assert list(g.columns) == ["name", "ase_atoms", "energy", "forces", "energy_corrected",
                               "stress", "energy_weight", "force_weight", "virial_weight", "tags"]
    assert list(df.columns) == list(before.columns)  # the input is not changed
    assert df["stress"].map(_stress_missing).sum() == before["stress"].map(_stress_missing).sum()
    assert (g["energy_corrected"] == df["energy_corrected"]).all()
    assert all(np.array_equal(a, b) for a, b in zip(g["forces"], df["forces"], strict=True))
    # energy weights: given ones kept, the missing one is their mean
    given = df["w_energy"].dropna()
    assert (g["energy_weight"][given.index] == given).all()
    assert g["energy_weight"][2] == pytest.approx(given.mean(), rel=1e-15)
    assert g["energy_weight"].dtype == np.float64
    # force weights: per atom, the missing row gets the mean over atoms
    for i, (w, atoms) in enumerate(zip(g["force_weight"], g["ase_atoms"], strict=True)):
        assert isinstance(w, np.ndarray) and w.shape == (len(atoms),)
        if i != 4:
            assert np.array_equal(w, df["w_forces"][i])
    atoms_weights = np.concatenate([w for i, w in enumerate(df["w_forces"]) if i != 4])
    assert np.allclose(g["force_weight"][4], atoms_weights.mean(), rtol=1e-15, atol=0)
    # stress: unknown -> zeros with virial weight 0; known -> as stored, weight as given
    for i in range(len(df)):
        stress, vw = g["stress"][i], g["virial_weight"][i]
        if _stress_missing(df["stress"][i]):
            assert np.array_equal(stress, np.zeros(6)) and vw == 0.0
        else:
            assert np.array_equal(stress, df["stress"][i])
            if i == 5:  # NaN given: mean of the given weights of rows with stress
                has = [df["virial_weight"][j] for j in range(len(df))
                       if j != 5 and not _stress_missing(df["stress"][j])]
                assert vw == pytest.approx(np.mean(has), rel=1e-15)
            else:
                assert vw == df["virial_weight"][i]
    assert g.attrs["mlipstore"]["reference_energies"] == df.attrs["mlipstore"]["reference_energies"]
    assert "grace" in g.attrs["mlipstore"] and "grace" not in df.attrs["mlipstore"]


def test_grace_frame_without_weights_adds_only_what_stress_needs():
    df = _frame().drop(columns=list(WEIGHT_COLUMNS))
    g = grace_frame(df)
    assert "energy_weight" not in g.columns and "force_weight" not in g.columns
    # GRACE's default virial weight is 1; rows without stress must get 0
    expected = [0.0 if _stress_missing(s) else 1.0 for s in df["stress"]]
    assert list(g["virial_weight"]) == expected
    all_stress = df[~df["stress"].map(_stress_missing)].reset_index(drop=True)
    assert "virial_weight" not in grace_frame(all_stress).columns


def test_grace_frame_refuses_what_grace_cannot_fit():
    df = _frame()
    df.at[3, "energy_corrected"] = math.nan
    with pytest.raises(ValueError, match="1 configurations have no finite energy_corrected"):
        grace_frame(df)
    df = _frame()
    df.at[2, "forces"] = None
    with pytest.raises(ValueError, match="forces"):
        grace_frame(df)
    df = _frame()
    df["energy_weight"] = 1.0
    with pytest.raises(ValueError, match="both pacemaker's and GRACE's"):
        grace_frame(df)
    df = _frame()
    df.at[3, "w_forces"] = np.ones(7)
    with pytest.raises(ValueError, match="force weights for"):
        grace_frame(df)


def test_grace_frame_varying_and_scalar_force_weights():
    df = _frame()
    varying = np.linspace(0.1, 0.4, len(df.at[3, "ase_atoms"]))
    df.at[3, "w_forces"] = varying
    df.at[0, "w_forces"] = 0.25  # one number for the structure
    g = grace_frame(df)
    assert np.array_equal(g["force_weight"][3], varying)  # GRACE's weights are per atom
    assert np.array_equal(g["force_weight"][0], np.full(len(df.at[0, "ase_atoms"]), 0.25))


def test_grace_reads_the_frame_as_intended():
    """The installed GRACE's own data builder on our rows: target, forces, per-atom force
    weights and the virial it derives from the stress; and why None stress is replaced."""
    databuilder = pytest.importorskip("tensorpotential.data.databuilder")
    builder = databuilder.ReferenceEnergyForcesStressesDataBuilder(
        is_fit_stress=True, normalize_force_per_structure=False)
    df = _frame()
    g = grace_frame(df)
    for i, row in g.iterrows():
        got = builder.extract_from_row(row)
        assert got["true_energy"].item() == df["energy_corrected"][i]
        assert np.array_equal(got["true_force"], df["forces"][i])
        assert got["energy_weight"].item() == g["energy_weight"][i]
        assert np.array_equal(got["force_weight"].reshape(-1), g["force_weight"][i])
        atoms = row["ase_atoms"]
        if not all(atoms.pbc):
            assert got["virial_weight"].item() == 0.0  # GRACE's own rule
        elif _stress_missing(df["stress"][i]):
            assert got["virial_weight"].item() == 0.0
        else:
            virial = -df["stress"][i] * atoms.get_volume()
            assert np.allclose(got["true_virial"].reshape(-1), virial[[0, 1, 2, 5, 4, 3]],
                               rtol=1e-15, atol=0)
            assert got["virial_weight"].item() == g["virial_weight"][i]
    periodic_unknown = next(i for i in range(len(df)) if all(df["ase_atoms"][i].pbc)
                            and _stress_missing(df["stress"][i]))
    raw = df.iloc[periodic_unknown].rename({"w_energy": "energy_weight"})
    with pytest.raises(TypeError):  # GRACE on pacemaker's None stress
        builder.extract_from_row(raw)


def test_write_grace_and_format_table(tmp_path):
    df = _frame()
    assert set(FORMATS) == {"pacemaker", "extxyz", "grace"}
    assert FORMATS["pacemaker"] is write_pickle_gzip and FORMATS["grace"] is write_grace
    for name, writer in FORMATS.items():
        path = tmp_path / f"out{trainers.SUFFIXES[name]}"
        writer(df, path)
        if name == "extxyz":
            assert len(_read(path)) == len(df)
        else:
            back = pd.read_pickle(path, compression="gzip")
            expected = df if name == "pacemaker" else grace_frame(df)
            assert list(back.columns) == list(expected.columns)
            assert (back["energy_corrected"] == expected["energy_corrected"]).all()
            if name == "grace":
                assert list(back["virial_weight"]) == list(expected["virial_weight"])


def test_cli_extxyz_export_gives_the_stored_values(tmp_path):
    """`mlipstore export --format extxyz`: ase.io.read gives the store's values bit for bit."""
    store = tmp_path / "store"
    cli("ingest", REPO / "data" / "raw" / "TiAl_tutorial.xyz", "--store", store, "--quiet",
        "--key-map", "forces=force,virial=virial")
    out = tmp_path / "train.extxyz"
    result = cli("export", "--store", store, "-o", out, "--format", "extxyz", "--quiet",
                 "--max-atoms", "4")
    frames = ase.io.read(out, index=":")
    table = Store(store).scan(columns=["id", "n_atoms"])
    rows = {i: row for i, row in zip(
        table.column("id").to_pylist(), Store(store).iter_atoms(), strict=True)}
    assert f"wrote {len(frames)} configurations" in result.output
    assert len(frames) == sum(n <= 4 for n in table.column("n_atoms").to_pylist())
    for atoms in frames:
        stored = rows[atoms.info["mlipstore_id"]]
        assert np.array_equal(atoms.positions, stored.positions)
        assert np.array_equal(atoms.cell.array, stored.cell.array)
        assert np.array_equal(atoms.numbers, stored.numbers)
        assert atoms.info["REF_energy"] == stored.get_potential_energy()  # no references
        assert np.array_equal(atoms.arrays["REF_forces"], stored.get_forces())
        assert np.array_equal(atoms.info["REF_stress"], stored.get_stress())
