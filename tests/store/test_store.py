"""The store: schema with units, identity, filters pushed into Parquet, compaction, recovery."""

from __future__ import annotations

import gzip
import json
import shutil

import ase.io
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from helpers import cli, emt_frames, tree_digest
from mlipstore import Configuration, KeyMap, ScanFilter, Store, ingest
from mlipstore._io import file_sha256
from mlipstore.store.codec import SCHEMA_VERSION
from mlipstore.store.store import COMMIT_MARKER


def test_shard_schema_is_typed_and_documented(store_dir, emt_xyz):
    ingest([emt_xyz], Store(store_dir, create=True))
    (shard,) = Store(store_dir).shard_paths()
    schema = pq.read_schema(shard)
    meta = schema.metadata
    assert int(meta[b"mlipstore.schema_version"]) == SCHEMA_VERSION
    assert json.loads(meta[b"mlipstore.units"])["stress"] == "eV/Angstrom^3"
    assert b"Voigt order xx yy zz yz xz xy" in meta[b"mlipstore.conventions"]
    assert schema.field("positions").type == pa.list_(pa.list_(pa.float64(), 3))
    assert schema.field("forces").metadata[b"unit"] == b"eV/Angstrom"
    assert schema.field("cell").type == pa.list_(pa.list_(pa.float64(), 3), 3)
    assert schema.field("stress").type == pa.list_(pa.float64())  # 6 values, see test_migration
    # readable by plain Arrow, no mlipstore code involved
    table = ds.dataset(store_dir, format="parquet").to_table()
    assert table.num_rows == 6


def test_missing_values_are_null_not_zero(store_dir, tmp_path):
    frames = emt_frames(2)
    for atoms in frames:
        del atoms.calc.results["stress"]
        del atoms.calc.results["free_energy"]
    path = tmp_path / "nostress.xyz"
    ase.io.write(path, frames, format="extxyz")
    ingest([path], Store(store_dir, create=True))
    table = Store(store_dir).scan()
    assert table.column("stress").null_count == 2
    assert table.column("free_energy").null_count == 2


def test_identity_ignores_provenance_and_negative_zero():
    atoms = emt_frames(1)[0]
    a = Configuration.from_atoms(atoms)
    atoms.calc.results["forces"][0, 0] = 0.0
    b = Configuration.from_atoms(atoms)
    atoms.calc.results["forces"][0, 0] = -0.0
    c = Configuration.from_atoms(atoms)
    assert b.id == c.id
    assert a.id != b.id or a.forces[0, 0] == 0.0
    atoms.calc.results["energy"] += 1e-12
    assert Configuration.from_atoms(atoms).id != c.id  # any change of a label is new data


def test_same_data_in_other_formats_is_one_configuration(store_dir, tmp_path, emt_xyz):
    store = Store(store_dir, create=True)
    ingest([emt_xyz], store)
    copy = tmp_path / "copy.extxyz.gz"
    with gzip.open(copy, "wb") as fh:
        fh.write(emt_xyz.read_bytes())
    traj = tmp_path / "copy.traj"
    ase.io.write(traj, ase.io.read(emt_xyz, ":"))
    report = ingest([copy, traj], store)
    assert (report.new, report.duplicate) == (0, 12)


def test_key_map_and_virial_to_stress(store_dir, tmp_path):
    atoms = emt_frames(1)[0]
    stress = atoms.get_stress()
    forces = atoms.get_forces()
    energy = atoms.get_potential_energy()
    full = np.array([[stress[0], stress[5], stress[4]], [stress[5], stress[1], stress[3]],
                     [stress[4], stress[3], stress[2]]])
    atoms.calc = None
    atoms.info.update(REF_energy=energy, REF_virial=-full * atoms.get_volume())
    atoms.arrays["REF_forces"] = forces
    path = tmp_path / "ref.xyz"
    ase.io.write(path, atoms, format="extxyz")
    report = ingest([path], Store(store_dir, create=True),
                    key_map=KeyMap.parse("energy=REF_energy,forces=REF_forces,"
                                         "virial=REF_virial"))
    assert report.ok and report.new == 1
    row = Store(store_dir).scan().to_pylist()[0]
    assert row["energy"] == energy
    assert np.allclose(row["stress"], stress, rtol=1e-12, atol=1e-15)


def test_filters_are_pushed_down(store_dir, tmp_path):
    cu = tmp_path / "cu.xyz"
    ase.io.write(cu, emt_frames(6, seed=1), format="extxyz")
    al = tmp_path / "al.xyz"
    ase.io.write(al, emt_frames(4, seed=2, symbols="Al"), format="extxyz")
    store = Store(store_dir, create=True)
    ingest([cu], store, tags=["cu"])
    ingest([al], store, tags=["al", "extra"])

    assert store.scan(ScanFilter(elements=["Al"])).num_rows == 4
    assert store.scan(ScanFilter(elements=["Cu"])).num_rows == 3  # odd frames hold Au
    assert store.scan(ScanFilter(elements=["Au", "Cu"])).num_rows == 6
    assert store.scan(ScanFilter(tags=["extra"])).num_rows == 4
    assert store.scan(ScanFilter(tags=["cu", "al"])).num_rows == 10

    table = store.scan()
    e = np.array([r["energy"] / r["n_atoms"] for r in table.to_pylist()])
    lo, hi = np.percentile(e, [25, 75])
    window = store.scan(ScanFilter(min_energy_per_atom=lo, max_energy_per_atom=hi))
    assert window.num_rows == int(np.sum((e >= lo) & (e <= hi))) > 0

    fmax = np.median(table.column("max_force").to_numpy())
    assert store.scan(ScanFilter(max_force=fmax)).num_rows == int(
        np.sum(table.column("max_force").to_numpy() <= fmax))
    atoms = list(store.iter_atoms(ScanFilter(elements=["Al"], max_atoms=8)))
    assert len(atoms) == 4 and all(a.get_potential_energy() for a in atoms)
    assert atoms[0].get_stress().shape == (6,)


def _store_of_small_shards(store_dir, tmp_path, shards: int, frames: int) -> Store:
    """A store written by ``shards`` separate ingests of ``frames`` frames each."""
    store = Store(store_dir, create=True)
    for seed in range(shards):
        path = tmp_path / f"f{seed}.xyz"
        ase.io.write(path, emt_frames(frames, seed=10 + seed), format="extxyz")
        ingest([path], store)
    return store


def test_compaction_merges_small_shards_and_keeps_every_row(store_dir, tmp_path):
    store = _store_of_small_shards(store_dir, tmp_path, shards=4, frames=3)
    ids = store.ids()
    assert len(store.shard_paths()) == 4
    new = store.compact()
    assert len(new) == 1 and store.shard_paths() == new
    assert store.ids() == ids and store.scan().num_rows == len(ids) == 12


def test_killed_compaction_never_shows_rows_twice(store_dir, tmp_path):
    store = _store_of_small_shards(store_dir, tmp_path, shards=3, frames=2)
    old = store.shard_paths()
    keep = tmp_path / "keep"
    keep.mkdir()
    for p in old:
        shutil.copy(p, keep / p.name)
    store.compact()
    for p in old:  # as if killed after committing the new shard, before deleting the old
        shutil.copy(keep / p.name, p)
    assert store.scan().num_rows == 6
    with store.writing():
        pass  # the next writer removes the replaced shards
    assert len(list(store_dir.glob("*.parquet"))) == 1


def test_killed_writer_is_rolled_back_or_forward(store_dir, tmp_path, emt_xyz):
    store = Store(store_dir, create=True)
    ingest([emt_xyz], store)
    before = tree_digest(store_dir)
    other = tmp_path / "other.xyz"
    ase.io.write(other, emt_frames(3, seed=5), format="extxyz")

    # killed before COMMITTING: staged shards are discarded
    with store.writing(), store.transaction() as txn:
        from mlipstore.ingestion.ingest import IngestReport, _tasks, read_task  # noqa: I001
        from datetime import datetime, timezone
        for task in _tasks([(other, None)], KeyMap(), (), None, False, False, (), IngestReport(),
                           datetime.now(timezone.utc)):
            for part in read_task(task):
                txn.write(part.batch)
        txn._close_writer()
        staged = txn.dir
        shutil.copytree(staged, tmp_path / "abandoned")
    shutil.copytree(tmp_path / "abandoned", staged)
    assert store.scan().num_rows == 6
    with store.writing():
        pass
    assert tree_digest(store_dir) == before

    # killed while writing the marker: only its half-written temporary file exists
    shutil.copytree(tmp_path / "abandoned", staged)
    (staged / f"{COMMIT_MARKER}.tmp").write_text('["part-2099')
    with store.writing():
        pass
    assert tree_digest(store_dir) == before

    # killed after COMMITTING, before the renames: rolled forward by the next writer
    shutil.copytree(tmp_path / "abandoned", staged)
    digest = file_sha256(staged / "0000.parquet")[:16]
    (staged / COMMIT_MARKER).write_text(json.dumps([
        f"part-20990101T000000000000Z-deadbeef-0001of0001-{digest}.parquet"]))
    assert store.scan().num_rows == 6
    with store.writing():
        pass
    assert store.scan().num_rows == 9 and not (store_dir / "_staging").exists()


@pytest.mark.parametrize("rows", [0, 5])
def test_info_json(store_dir, tmp_path, rows):
    if rows:
        path = tmp_path / "x.xyz"
        ase.io.write(path, emt_frames(rows), format="extxyz")
        cli("ingest", path, "--store", store_dir, "--quiet", "--tag", "t1")
    else:
        store_dir.mkdir()
    info = json.loads(cli("info", "--store", store_dir, "--json").stdout)
    assert info["n_configs"] == rows
    assert info["n_atoms"] == 8 * rows
    assert info["elements"] == (["Au", "Cu"] if rows else [])
    assert info["n_shards"] == (1 if rows else 0)
    assert info["bytes"] == sum(p.stat().st_size for p in store_dir.glob("*.parquet"))
    assert info["tags"] == ({"t1": rows} if rows else {})
    if rows:  # the distributions as a picture
        cli("info", "--store", store_dir, "--plot", tmp_path / "dist.png")
        assert (tmp_path / "dist.png").read_bytes()[:4] == b"\x89PNG"


def test_info_on_missing_store_is_a_clear_error(tmp_path):
    result = cli("info", "--store", tmp_path / "nowhere", expect=1)
    assert "no store at" in result.stderr
