"""No silent mixing of DFT methods: two copies of a real output with one setting changed
get different fingerprints; exporting both is refused naming the setting, unless allowed
(recorded) or one is chosen; a store from before method records still trains, warned."""

from __future__ import annotations

import json
import logging
import shutil

import pandas as pd
import pytest
import yaml

from helpers import (
    BIN,
    DFT,
    REPO,
    SMALL_FIT,
    cli,
    needs_shared,
    new_project,
    run,
)
from mlipstore.store.store import Store
from mlipstore.training.export import export_store

# setting changed -> (shared file, text in it, replacement, the method field that differs)
CHANGES = {
    "cutoff": ("q-e/test-suite/pw_md/benchmark.out.git.inp=md.in.args=1",
               "kinetic-energy cutoff     =       8.0000  Ry",
               "kinetic-energy cutoff     =      10.0000  Ry", "cutoff_eV"),
    "functional": ("dpdata/tests/qe.scf/02.out", "= SCAN ( 0  0  0  0 0 4)",
                   "= PBE ( 1  4  3  4 0 0)", "xc"),
    "smearing": ("dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml",
                 'name="ISMEAR">     1<', 'name="ISMEAR">     0<', "smearing"),
}
FIXTURE_V2 = REPO / "tests" / "fixtures" / "store_v2"


def two_copies(change: str, folder) -> tuple:
    """The shared file in folder/a and, with the one setting changed, in folder/b."""
    relpath, old, new, _ = CHANGES[change]
    source = DFT / relpath
    text = source.read_text()
    assert old in text
    a, b = folder / "a" / source.name, folder / "b" / source.name
    for path, content in ((a, text), (b, text.replace(old, new))):
        path.parent.mkdir(parents=True)
        path.write_text(content)
    return a, b


def fingerprints_by_folder(store_dir) -> dict[str, str]:
    table = Store(store_dir).scan(columns=["source_path", "method_fingerprint"])
    pairs = set(zip(table.column("source_path").to_pylist(),
                    table.column("method_fingerprint").to_pylist(), strict=True))
    return {path.split("/")[-2]: fp for path, fp in pairs}


@needs_shared
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_one_changed_setting_is_refused_then_allowed_or_chosen(tmp_path, change):
    setting = CHANGES[change][3]
    a, b = two_copies(change, tmp_path)
    store = tmp_path / "store"
    cli("ingest", a, b, "--store", store, "--quiet")
    prints = fingerprints_by_folder(store)
    assert len(set(prints.values())) == 2  # the same numbers, two methods: both stored
    n = Store(store).scan(columns=["id"]).num_rows // 2
    info = json.loads(cli("info", "--store", store, "--json").output)["methods"]
    assert {k: v["n_configs"] for k, v in info.items()} == {prints["a"]: n, prints["b"]: n}

    out = tmp_path / "mixed.pckl.gzip"
    refused = cli("export", "--store", store, "-o", out, "--quiet", expect=1).output
    assert "mixes 2 DFT methods" in refused
    assert f"settings that differ: {setting})" in refused
    table_lines = [line.split() for line in refused.splitlines()]
    assert ["configurations", str(n), str(n)] in table_lines
    assert any(line[:1] == [setting] for line in table_lines)
    assert "--allow-mixed-methods" in refused and "method_fingerprints" in refused
    assert not out.exists()

    cli("export", "--store", store, "-o", out, "--quiet", "--allow-mixed-methods")
    df = pd.read_pickle(out, compression="gzip")
    recorded = df.attrs["mlipstore"]["methods"]
    assert len(df) == 2 * n and recorded["allow_mixed"] is True
    assert {k: v["n_configs"] for k, v in recorded["summary"].items()} == {
        prints["a"]: n, prints["b"]: n}

    chosen = tmp_path / "chosen.pckl.gzip"
    cli("export", "--store", store, "-o", chosen, "--quiet",
        "--method-fingerprint", prints["b"])
    df = pd.read_pickle(chosen, compression="gzip")
    assert len(df) == n and df.attrs["mlipstore"]["methods"]["chosen"] == [prints["b"]]
    assert df.attrs["mlipstore"]["methods"]["allow_mixed"] is False


def set_params(root, **values) -> None:
    doc = yaml.safe_load((root / "params.yaml").read_text())
    for dotted, value in values.items():
        section, key = dotted.split(".")
        doc[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))


def stage(root, name: str, check: bool = True):
    return run([str(BIN / "mlipstore"), "stage", name, "--quiet"], root, check=check)


@needs_shared
def test_a_project_refuses_mixed_methods_and_records_the_choice(tmp_path):
    root = new_project(tmp_path / "proj", {**SMALL_FIT, "select.method": "none"})
    two_copies("cutoff", root / "data" / "raw")
    stage(root, "ingest")
    prints = fingerprints_by_folder(root / "data" / "store")

    refused = stage(root, "export", check=False)
    assert refused.returncode == 1 and "settings that differ: cutoff_eV" in refused.stderr
    assert not (root / "data" / "export" / "export.json").exists()

    set_params(root, **{"export.methods": "allow_mixed"})
    stage(root, "export")
    export = json.loads((root / "data" / "export" / "export.json").read_text())
    assert export["methods"]["allow_mixed"] is True
    assert set(export["methods"]["summary"]) == set(prints.values())
    stage(root, "select")
    stage(root, "train")
    lineage = json.loads((root / "models" / "potential_gen_01.json").read_text())
    methods = lineage["methods"]
    assert methods["allow_mixed"] is True and methods["chosen"] is None
    assert set(methods["train"]) == set(prints.values())
    assert sum(methods["train"].values()) == lineage["train"]["n_structures"]
    assert sum(methods["test"].values()) == lineage["test"]["n_structures"]
    cutoffs = {fp: s["cutoff_eV"] for fp, s in methods["settings"].items()}
    assert cutoffs == {prints["a"]: pytest.approx(8 * 13.605693122994),
                       prints["b"]: pytest.approx(10 * 13.605693122994)}

    # one of them, chosen in params.yaml
    set_params(root, **{"export.methods": "single",
                        "export.method_fingerprints": [prints["a"]]})
    stage(root, "export")
    export = json.loads((root / "data" / "export" / "export.json").read_text())
    assert export["n_pool"] + export["n_test"] == 50
    assert export["methods"]["chosen"] == [prints["a"]]


def test_a_store_from_before_method_records_exports_and_trains_with_a_warning(
        tmp_path, caplog):
    store_dir = tmp_path / "store"
    shutil.copytree(FIXTURE_V2, store_dir)
    store = Store(store_dir)
    assert store.schema_versions() and set(store.schema_versions().values()) == {2}
    table = store.scan(columns=["method", "method_fingerprint"])
    assert table.num_rows == 10 and table.column("method").null_count == 10
    assert table.column("method_fingerprint").null_count == 10
    info = json.loads(cli("info", "--store", store_dir, "--json").output)
    assert info["methods"] == {"unknown": {"n_configs": 10, "settings": {}}}
    assert store.verify()[0] == []  # ids of configurations without a method are unchanged

    with caplog.at_level(logging.WARNING):
        report = export_store(store, tmp_path / "old.pckl.gzip", reference_energies="auto")
    assert report.n_structures == 10 and report.methods["summary"] == info["methods"]
    assert "10 of 10 configurations state no DFT method" in caplog.text

    root = new_project(tmp_path / "proj", {  # 16 Al and 16 Ti atoms in 8 structures
        **SMALL_FIT, "select.method": "none",
        "training.ace_basis_config.number_of_functions_per_element": 6})
    shutil.copytree(FIXTURE_V2, root / "data" / "store")
    for name in ("export", "select"):
        stage(root, name)
    trained = stage(root, "train")
    assert "state no DFT method" in trained.stderr
    lineage = json.loads((root / "models" / "potential_gen_01.json").read_text())
    assert lineage["methods"]["train"] == {"unknown": lineage["train"]["n_structures"]}
    assert lineage["methods"]["settings"] == {}
