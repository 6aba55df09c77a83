"""Fit targets exactly as the source gave them: pacemaker DataFrames with only
energy_corrected, or with both energies where they differ; per-structure weights from
pacemaker and GRACE; references recovered and never mixed silently."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import PACEMAKER_DATA, REPO, cli, needs_shared
from mlipstore.store.store import Store
from mlipstore.training.targets import source_references

pytestmark = needs_shared

ALNI = PACEMAKER_DATA / "tests" / "df_AlNi.pckl.gzip"
REFERENCES = {"Al": -3.7481726155, "Ni": -5.5837489321}  # eV, arbitrary but not round


def _counts(df: pd.DataFrame, symbol: str) -> np.ndarray:
    return df["ase_atoms"].map(lambda a: int(a.get_chemical_symbols().count(symbol))).values


def _read(path) -> pd.DataFrame:
    return pd.read_pickle(path, compression="gzip")


@pytest.fixture
def alni() -> pd.DataFrame:
    return _read(ALNI)


def referenced(df: pd.DataFrame, refs=REFERENCES) -> pd.DataFrame:
    """The DataFrame with per-element references subtracted into energy_corrected."""
    out = df.copy()
    out["energy_corrected"] = (df["energy"] - refs["Al"] * _counts(df, "Al")
                               - refs["Ni"] * _counts(df, "Ni"))
    return out


def rattled(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Other configurations (positions moved by 1e-3 Å) with the same labels."""
    rng = np.random.default_rng(seed)
    out = df.copy()
    out["ase_atoms"] = [a.copy() for a in df["ase_atoms"]]
    for atoms in out["ase_atoms"]:
        atoms.positions += rng.normal(scale=1e-3, size=atoms.positions.shape)
    return out


def ingest_export(tmp_path, frames: dict[str, pd.DataFrame], *export_args, expect=0):
    store = tmp_path / "store"
    for name, df in frames.items():
        path = tmp_path / f"{name}.pckl.gzip"
        df.to_pickle(path, compression="gzip")
        cli("ingest", path, "--store", store, "--trust-pickle", "--quiet")
    out = tmp_path / "export.pckl.gzip"
    result = cli("export", "--store", store, "-o", out, "--quiet", *export_args, expect=expect)
    return store, out, result


def _key(atoms) -> bytes:
    return atoms.positions.tobytes() + atoms.cell.array.tobytes() + atoms.numbers.tobytes()


def assert_same_data(source: pd.DataFrame, exported: pd.DataFrame) -> None:
    """energy_corrected, forces, positions, cell and weights bit for bit, in any order."""
    assert len(exported) == len(source)
    by_key = {_key(a): k for k, a in enumerate(exported["ase_atoms"])}
    assert len(by_key) == len(exported)
    for _, row in source.iterrows():
        out = exported.iloc[by_key[_key(row["ase_atoms"])]]
        assert out["energy_corrected"] == row["energy_corrected"]
        assert np.array_equal(out["forces"], row["forces"])
        assert np.array_equal(out["ase_atoms"].positions, row["ase_atoms"].positions)
        assert np.array_equal(out["ase_atoms"].cell.array, row["ase_atoms"].cell.array)
        assert np.array_equal(out["ase_atoms"].numbers, row["ase_atoms"].numbers)
        if "w_energy" in source:
            assert out["w_energy"] == row["w_energy"]
            assert np.array_equal(out["w_forces"], row["w_forces"])


def test_only_energy_corrected_ingests_and_exports_bit_for_bit(tmp_path, alni):
    # the layout of pacemaker's example datasets: no raw energy at all
    source = referenced(alni).drop(columns=["energy"])
    source["energy_corrected_per_atom"] = source["energy_corrected"] / source["NUMBER_OF_ATOMS"]
    store, out, result = ingest_export(tmp_path, {"only": source})
    exported = _read(out)
    assert_same_data(source, exported)
    assert exported["energy"].isna().all()  # null, never 0
    assert "9 the source's energy_corrected, 0 energy - references" in result.output
    info = Store(store).info()
    assert (info["with_energy"], info["with_energy_corrected"], info["with_weights"]) == (0, 9, 9)
    again = cli("ingest", tmp_path / "only.pckl.gzip", "--store", store, "--trust-pickle",
                "--quiet")
    assert "0 new, 9 duplicate" in again.output
    # re-referencing needs the raw energy, which these configurations do not have
    failed = cli("export", "--store", store, "-o", tmp_path / "re.pckl.gzip", "--rereference",
                 "--reference-energy", "Al=-3", "--reference-energy", "Ni=-5", expect=1)
    assert "cannot re-reference 9 configuration(s)" in failed.output
    assert "only.pckl.gzip" in failed.output
    assert not (tmp_path / "re.pckl.gzip").exists()


def test_both_energies_keep_the_sources_target_and_recover_its_references(tmp_path, alni):
    source = referenced(alni)
    assert (source["energy"] != source["energy_corrected"]).all()  # they differ
    store, out, _ = ingest_export(tmp_path, {"both": source})
    exported = _read(out)
    assert_same_data(source, exported)
    refs = exported.attrs["mlipstore"]["reference_energies"]
    assert refs == pytest.approx(REFERENCES, abs=1e-9)
    [recorded] = source_references(Store(store))
    assert recorded["reference_energies"] == pytest.approx(REFERENCES, abs=1e-9)
    assert recorded["residual_eV_per_atom"] < 1e-9
    shown = cli("info", "--store", store).output
    assert "references Al -3.74817, Ni -5.58375 eV" in shown
    # asked to re-reference: energy - the given references, not the source's target
    again = tmp_path / "re.pckl.gzip"
    cli("export", "--store", store, "-o", again, "--rereference", "--quiet")
    assert np.array_equal(_read(again)["energy_corrected"].values,
                          _read(out)["energy"].values)


def test_reference_groups_are_never_mixed_silently(tmp_path, alni):
    other = {"Al": -3.0, "Ni": -5.0}
    frames = {"refs_a": referenced(alni), "refs_b": referenced(rattled(alni, 1), other)}
    store, out, result = ingest_export(tmp_path, frames, expect=1)
    assert "refusing to mix fit targets" in result.output
    assert "refs_a.pckl.gzip: 9 configuration(s)" in result.output
    assert "refs_b.pckl.gzip: 9 configuration(s)" in result.output
    assert not out.exists()
    cli("export", "--store", store, "-o", out, "--allow-mixed-references", "--quiet")
    assert len(_read(out)) == 18
    cli("export", "--store", store, "-o", out, "--rereference", "--quiet")
    assert np.array_equal(_read(out)["energy_corrected"], _read(out)["energy"])


def test_auto_references_adopt_the_sources_own(tmp_path, alni):
    """Energy-only configurations exported with a referenced source get its references."""
    energy_only = rattled(alni, 2).drop(columns=["energy_corrected"])
    store, out, result = ingest_export(tmp_path, {"refs": referenced(alni),
                                                  "raw": energy_only},
                                       "--auto-references")
    exported = _read(out)
    raw = exported[exported["name"].isin(set(exported["name"]) - _ids(store, "refs"))]
    assert len(raw) == 9
    expected = (raw["energy"] - REFERENCES["Al"] * _counts(raw, "Al")
                - REFERENCES["Ni"] * _counts(raw, "Ni"))
    assert np.allclose(raw["energy_corrected"], expected, atol=1e-9, rtol=0)
    # given references that differ from the source's are refused
    failed = cli("export", "--store", store, "-o", out, "--reference-energy", "Al=-3",
                 "--reference-energy", "Ni=-5", expect=1)
    assert "the references given differ from the sources'" in failed.output


def test_uncovered_compositions_are_refused(tmp_path, alni):
    """Energy-only TiAl beside referenced AlNi: no reference for Ti is implied."""
    store = tmp_path / "store"
    source = referenced(alni)
    source.to_pickle(tmp_path / "alni.pckl.gzip", compression="gzip")
    cli("ingest", tmp_path / "alni.pckl.gzip", "--store", store, "--trust-pickle", "--quiet")
    cli("ingest", REPO / "data" / "raw" / "TiAl_tutorial.xyz", "--store", store, "--quiet",
        "--key-map", "forces=force,virial=virial")
    out = tmp_path / "out.pckl.gzip"
    failed = cli("export", "--store", store, "-o", out, "--auto-references", expect=1)
    assert "not covered by the sources'" in failed.output
    assert "329 configuration(s) without energy_corrected" in failed.output


def test_grace_weights_are_kept(tmp_path, alni):
    source = referenced(alni).drop(columns=["w_energy", "w_forces"])
    rng = np.random.default_rng(3)
    source["energy_weight"] = rng.uniform(0.5, 2, len(source))
    source["force_weight"] = rng.uniform(0.5, 2, len(source))  # one number per structure
    source["virial_weight"] = rng.uniform(0.5, 2, len(source))
    _, out, _ = ingest_export(tmp_path, {"grace": source})
    exported = _read(out)
    by_key = {_key(a): k for k, a in enumerate(exported["ase_atoms"])}
    for _, row in source.iterrows():
        out_row = exported.iloc[by_key[_key(row["ase_atoms"])]]
        assert out_row["w_energy"] == row["energy_weight"]
        assert np.array_equal(out_row["w_forces"],
                              np.full(len(row["ase_atoms"]), row["force_weight"]))
        assert out_row["virial_weight"] == row["virial_weight"]


def test_weights_reach_pacemaker_only_with_policy_source(alni):
    from mlipstore.params import TrainingConfig
    from mlipstore.pipeline.stages import _for_pacemaker

    frame = alni.assign(tags=[["a"]] * len(alni))
    kept = _for_pacemaker(frame, TrainingConfig())
    assert {"w_energy", "w_forces"} <= set(kept.columns) and "tags" not in kept
    dropped = _for_pacemaker(frame, TrainingConfig(weighting={"policy": "uniform"}))
    assert not {"w_energy", "w_forces"} & set(dropped.columns)
    by_tag = _for_pacemaker(frame, TrainingConfig(weighting={"by_tag": {"a": 3.0}}))
    assert (by_tag["w_factor"] == 3.0).all() and "w_energy" in by_tag


def _ids(store, source_stem: str) -> set[str]:
    table = Store(store).scan(columns=["id", "source_path"])
    return {i for i, s in zip(table.column("id").to_pylist(),
                              table.column("source_path").to_pylist(), strict=True)
            if source_stem in s}


def test_export_summary_records_how_targets_were_made(tmp_path, alni):
    from mlipstore.params import Params
    from mlipstore.pipeline.training_data import TrainingData

    path = tmp_path / "both.pckl.gzip"
    referenced(alni).to_pickle(path, compression="gzip")
    cli("ingest", path, "--store", tmp_path / "data" / "store", "--trust-pickle", "--quiet")
    params = Params.model_validate({"split": {"test_fraction": 0.3}})
    summary = TrainingData(tmp_path, params).export_for_pacemaker()
    assert summary["reference_energies"] == pytest.approx(REFERENCES, abs=1e-9)
    pool = summary["targets"]["pool"]
    assert pool["n_targets_from_source"] == summary["n_pool"]
    assert pool["source_references"][0]["reference_energies"] == pytest.approx(REFERENCES)
    json.dumps(summary)  # export.json holds it
