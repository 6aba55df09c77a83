"""Schema version 2 beside version 1: a store written by the previous version (fixture
tests/fixtures/store_v1, made by make_store_v1.py) opens, exports identically and verifies
as it is, takes new data, and `mlipstore migrate` brings it to the current version."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from helpers import REPO, cli, emt_frames, tree_digest
from mlipstore.store.codec import SCHEMA_VERSION
from mlipstore.store.store import Store

FIXTURE = REPO / "tests" / "fixtures" / "store_v1"
# pyarrow < 26 (the last for Python 3.10) cannot read a nullable fixed-size list back from
# Parquet: version-1 stress of a store with configurations without stress
needs_pyarrow_26 = pytest.mark.skipif(
    int(pa.__version__.split(".")[0]) < 26,
    reason=f"pyarrow {pa.__version__} cannot read version-1 stress columns with nulls "
    "(migrate such stores with Python 3.11+)")
EXPECTED = json.loads((REPO / "tests" / "fixtures" / "store_v1_export.json").read_text())


@pytest.fixture
def v1_store(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(FIXTURE, store)
    return store


def assert_export_is_the_v1_one(path) -> None:
    df = pd.read_pickle(path, compression="gzip")
    assert list(df["name"]) == [row["name"] for row in EXPECTED["export"]]
    for (_, got), want in zip(df.iterrows(), EXPECTED["export"], strict=True):
        atoms = got["ase_atoms"]
        assert atoms.numbers.tolist() == want["numbers"]
        assert atoms.positions.tolist() == want["positions"]  # floats from JSON: exact
        assert atoms.cell.array.tolist() == want["cell"]
        assert got["energy"] == want["energy"]
        assert got["energy_corrected"] == want["energy_corrected"]
        assert got["forces"].tolist() == want["forces"]
        assert (None if got["stress"] is None else list(got["stress"])) == want["stress"]


@needs_pyarrow_26
def test_v1_store_reads_exports_and_verifies_unchanged(tmp_path, v1_store):
    before = tree_digest(v1_store)
    info = json.loads(cli("info", "--store", v1_store, "--json").output)
    assert info["schema_versions"] == {"1": 2}
    assert (info["n_configs"], info["with_stress"], info["with_free_energy"]) == (18, 12, 6)
    assert info["from_unfinished_runs"] == 0 and info["with_energy_corrected"] == 0
    out = tmp_path / "v1.pckl.gzip"
    cli("export", "--store", v1_store, "-o", out, "--quiet")
    assert_export_is_the_v1_one(out)
    assert "verified 2 shard(s), 18 configurations: 0 problem(s)" in cli(
        "verify", "--store", v1_store).output
    assert tree_digest(v1_store) == before  # reading never rewrites


def add_new_data(tmp_path, store_dir, n: int) -> Store:
    """Ingest ``n`` EMT frames with today's mlipstore (version-2 shards)."""
    import ase.io

    path = tmp_path / "emt.extxyz"
    ase.io.write(path, emt_frames(n))
    cli("ingest", path, "--store", store_dir, "--quiet")
    return Store(store_dir)


@needs_pyarrow_26
def test_new_data_goes_beside_v1_shards(tmp_path, v1_store):
    store = add_new_data(tmp_path, v1_store, 4)
    assert sorted(store.schema_versions().values()) == [1, 1, SCHEMA_VERSION]
    table = store.scan()
    assert table.num_rows == 22
    assert table.column("run_finished").to_pylist() == [True] * 22
    assert store.verify()[0] == []


@needs_pyarrow_26
def test_migrate_rewrites_only_old_shards_and_keeps_every_value(tmp_path, v1_store):
    store = add_new_data(tmp_path, v1_store, 3)
    current = [p for p, v in store.schema_versions().items() if v == SCHEMA_VERSION]
    ids = store.ids()
    before = store.scan().sort_by("id")
    result = cli("migrate", "--store", v1_store)
    assert "migrated 2 shard(s) into 1" in result.output
    assert set(store.schema_versions().values()) == {SCHEMA_VERSION}
    assert set(current) <= set(store.schema_versions())  # the current shard is untouched
    assert store.ids() == ids
    after = store.scan().sort_by("id")
    for name in before.column_names:
        if name != "ingested_at":
            assert after.column(name).equals(before.column(name)), name
    assert store.verify()[0] == []
    out = tmp_path / "migrated.pckl.gzip"
    cli("export", "--store", v1_store, "-o", out, "--quiet", "--tag", "demo", "--tag",
        "nostress")
    assert_export_is_the_v1_one(out)
    assert "nothing to migrate" in cli("migrate", "--store", v1_store).output


def test_a_newer_schema_version_is_a_clear_error(tmp_path, v1_store):
    shard = sorted(v1_store.glob("*.parquet"))[0]
    table = pq.read_table(shard)
    meta = {**table.schema.metadata, b"mlipstore.schema_version": b"99"}
    pq.write_table(table.replace_schema_metadata(meta), shard)
    for args in (["info", "--store", v1_store], ["export", "--store", v1_store, "-o",
                                                 tmp_path / "x.pckl.gzip"],
                 ["migrate", "--store", v1_store]):
        result = cli(*args, expect=1)
        assert "schema version 99 is newer than this mlipstore's" in result.output, args
        assert "Traceback" not in result.output
    assert not (tmp_path / "x.pckl.gzip").exists()


def test_stress_is_stored_as_a_plain_list(tmp_path):
    """A nullable fixed-size list cannot be read back by pyarrow < 26 (Python 3.10)."""
    import ase.io

    path = tmp_path / "emt.extxyz"
    frames = emt_frames(2)
    frames[1].calc.results.pop("stress")
    ase.io.write(path, frames)
    cli("ingest", path, "--store", tmp_path / "store", "--quiet")
    [shard] = (tmp_path / "store").glob("*.parquet")
    schema = pq.read_schema(shard)
    assert str(schema.field("stress").type) == "list<element: double>"
    stress = pq.read_table(shard).column("stress").to_pylist()
    assert sum(s is None for s in stress) == 1
    assert np.allclose([s for s in stress if s is not None][0], frames[0].get_stress())
