"""Sharing through DVC remotes: a store and a trained potential pushed to a local
directory, to S3 (moto's server) and over SSH (sshd), each started here on 127.0.0.1;
pulled into a fresh clone bit for bit; incremental pushes; any version read without a
checkout; dataset diff; DuckDB reading the store with no mlipstore code.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ase.io
import pytest
import yaml

from helpers import (
    S3_CREDENTIALS,
    SMALL_FIT,
    cli,
    emt_frames,
    new_project,
    ran_stages,
    remote_objects,
    run,
    s3_server,
    ssh_server,
    tree_digest,
)
from mlipstore.project import add_remote, default_remote_path, remote_url
from mlipstore.store.method import Method
from mlipstore.store.store import Store, StoreError
from mlipstore.store.versions import clean_clones, diff_revisions, open_store

N_BASE = 200               # configurations of generation 1
N_NEW = N_BASE // 100      # 1% appended afterwards
SHARED_DIRS = ("data/store", "data/export", "data/selection", "models")


@pytest.fixture(autouse=True)
def no_leftover_clones():
    """Each test leaves no temporary clone of a git URL behind."""
    yield
    clean_clones()


@dataclass(frozen=True)
class Generation:
    root: Path
    commit: str
    info: dict          # Store.info() of the working tree at ``commit``
    ids: frozenset


@pytest.fixture(scope="module")
def generation(tmp_path_factory) -> Generation:
    """A project (`mlipstore init`) with N_BASE EMT configurations, the pipeline run with
    the fake pacemaker and everything committed; never pushed, never changed."""
    root = new_project(tmp_path_factory.mktemp("shared") / "proj", SMALL_FIT)
    ase.io.write(root / "data" / "raw" / "emt.extxyz", emt_frames(N_BASE), format="extxyz")
    run(["dvc", "repro"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "generation 1"], root)
    store = Store(root / "data" / "store")
    return Generation(root, _head(root), store.info(), frozenset(store.ids()))


def _head(root: Path) -> str:
    return run(["git", "rev-parse", "HEAD"], root).stdout.strip()


def _copy(generation: Generation, dest: Path) -> Path:
    """A private copy of the generation-1 project (git, DVC cache and all)."""
    shutil.copytree(generation.root, dest, symlinks=True)
    return dest


def _cache_objects(root: Path) -> dict[str, int]:
    """The project's DVC cache of data (not the run cache, which `dvc push` leaves
    behind), in the remote's layout: files/md5/xx/yyyy -> bytes."""
    cache = root / ".dvc" / "cache"
    return {p.relative_to(cache).as_posix(): p.stat().st_size
            for p in (cache / "files").rglob("*") if p.is_file()}


def _append_one_percent(root: Path) -> Path:
    """N_NEW new configurations in the inbox folder gen_02; `dvc repro ingest` adds them
    as one new shard, which is returned."""
    before = set((root / "data" / "store").glob("*.parquet"))
    inbox = root / "data" / "raw" / "gen_02"
    inbox.mkdir()
    ase.io.write(inbox / "more.extxyz", emt_frames(N_NEW, seed=1), format="extxyz")
    assert ran_stages(run(["dvc", "repro", "ingest"], root).stdout) == ["ingest"]
    (shard,) = set((root / "data" / "store").glob("*.parquet")) - before
    return shard


def share_round_trip(kind: str, root: Path, tmp: Path, record_property,
                     prepare_clone: Callable[[Path], None] = lambda clone: None,
                     **env: str) -> None:
    """Push generation 1 to the project's default remote, pull it into a fresh clone
    (same bytes, nothing to reproduce), then push 1% more data: only the new shard and
    DVC's directory manifest travel."""
    assert remote_objects(root) == {}
    pushed = run(["dvc", "push"], root, **env).stdout
    first = remote_objects(root)
    assert first == _cache_objects(root)          # everything the cache holds, as is
    assert f"{len(first)} files pushed" in pushed

    clone = tmp / "clone"
    run(["git", "clone", "-q", str(root), str(clone)], tmp)
    prepare_clone(clone)
    assert not (clone / "models").exists()
    run(["dvc", "pull"], clone, **env)
    for path in SHARED_DIRS:
        assert tree_digest(clone / path) == tree_digest(root / path), path
    assert tree_digest(clone / "models") and any((clone / "models").glob("*.yace"))
    out = run(["dvc", "repro"], clone, **env).stdout
    assert ran_stages(out) == [] and "Data and pipelines are up to date" in out
    assert json.loads(run(["dvc", "status", "--json"], clone, **env).stdout) == {}

    shard = _append_one_percent(root)
    pushed = run(["dvc", "push"], root, **env).stdout
    after = remote_objects(root)
    new = {path: size for path, size in after.items() if path not in first}
    assert set(first) <= set(after) and "2 files pushed" in pushed
    manifests = [p for p in new if p.endswith(".dir")]
    data = [p for p in new if not p.endswith(".dir")]
    md5 = hashlib.md5(shard.read_bytes()).hexdigest()
    assert len(manifests) == 1 and data == [f"files/md5/{md5[:2]}/{md5[2:]}"]
    assert new[data[0]] == shard.stat().st_size
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (store_out,) = lock["stages"]["ingest"]["outs"]  # the manifest is the store's version
    assert manifests == [f"files/md5/{store_out['md5'][:2]}/{store_out['md5'][2:]}"]
    record_property("figure", (
        f"{kind} remote: first push {len(first)} objects, {sum(first.values())} B; "
        f"fresh clone pulled them, models byte-identical, dvc repro: nothing to do; "
        f"+{N_NEW} configurations ({N_NEW / N_BASE:.0%}): {len(new)} new objects, "
        f"{sum(new.values())} B (shard {new[data[0]]} B + .dir {new[manifests[0]]} B) "
        f"of {sum(after.values())} B in the remote"))


def test_init_configures_a_default_local_remote(generation, tmp_path):
    assert remote_url(generation.root) == str(default_remote_path(generation.root))
    assert default_remote_path(generation.root).parent == generation.root.parent
    cli("init", tmp_path / "elsewhere", "--remote", tmp_path / "team-remote")
    assert remote_url(tmp_path / "elsewhere") == str((tmp_path / "team-remote").resolve())
    cli("init", tmp_path / "bare", "--no-remote")
    assert remote_url(tmp_path / "bare") is None
    theirs = tmp_path / "theirs"  # a DVC project with a default remote of its own
    run(["git", "init", "-q", str(theirs)], tmp_path)
    run(["dvc", "init", "-q"], theirs)
    add_remote(theirs, tmp_path / "their-remote", name="mine")
    cli("init", theirs)
    assert remote_url(theirs) == str((tmp_path / "their-remote").resolve())


def test_local_remote_round_trip(generation, tmp_path, record_property):
    """The remote `mlipstore init` configured, a directory beside the project."""
    root = _copy(generation, tmp_path / "proj")
    share_round_trip("local", root, tmp_path, record_property)


def test_s3_remote_round_trip(generation, tmp_path, record_property, monkeypatch):
    """An S3 remote on moto's S3 server; credentials from the environment."""
    for key, value in S3_CREDENTIALS.items():
        monkeypatch.setenv(key, value)  # for remote_objects and open_store in this process
    root = _copy(generation, tmp_path / "proj")
    with s3_server("mlipstore-test") as endpoint:
        add_remote(root, "s3://mlipstore-test/store", name="s3",
                   options={"endpointurl": endpoint})
        run(["git", "commit", "-qam", "share on S3"], root)
        share_round_trip("S3", root, tmp_path, record_property, **S3_CREDENTIALS)
        run(["git", "add", "-A"], root)
        run(["git", "commit", "-qm", "1% more"], root)
        # a machine without a checkout: the git repository by URL, the data from S3
        url = f"file://{tmp_path / 'bare.git'}"
        run(["git", "clone", "-q", "--bare", str(root), url[len("file://"):]], tmp_path)
        with open_store(url, "HEAD~1") as old:  # generation 1's data; S3 as its remote
            assert old.ids() == generation.ids
        shown = json.loads(cli("info", "--repo", url, "--rev", "HEAD", "--json").output)
        assert shown["n_configs"] == N_BASE + N_NEW and shown["n_shards"] == 2

def test_ssh_remote_round_trip(generation, tmp_path, record_property, monkeypatch):
    """An SSH remote served by sshd with its own host key; the client key is authorized
    and the host key is the only entry of known_hosts."""
    root = _copy(generation, tmp_path / "proj")
    with ssh_server(tmp_path / "sshd") as server:
        monkeypatch.setenv("HOME", str(server.home))  # known_hosts for remote_objects
        url = f"ssh://{server.user}@127.0.0.1:{server.port}{tmp_path / 'ssh-remote'}"
        keyfile = {"keyfile": str(server.keyfile)}
        add_remote(root, url, name="ssh", local_options=keyfile)
        run(["git", "commit", "-qam", "share over SSH"], root)
        share_round_trip("SSH", root, tmp_path, record_property,
                         lambda clone: add_remote(clone, url, name="ssh",
                                                  local_options=keyfile),
                         HOME=str(server.home))


def test_any_version_and_diff(generation, tmp_path):
    """The store at a past commit through DVC (Python and `info --rev`), and what changed
    between two commits (`diff`), against what the working tree held at each."""
    root = _copy(generation, tmp_path / "proj")
    frames = emt_frames(N_NEW, seed=1)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["ingest"]["methods"] = {"gen_02/*": "code=ASE,xc=EMT"}  # a method, stated
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _append_one_percent(root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "1% more"], root)
    now = Store(root / "data" / "store")
    added = now.ids() - generation.ids
    assert len(added) == N_NEW

    with open_store(root, generation.commit) as old:
        info = old.info()
        lineage = json.loads((root / "models" / "potential_gen_01.json").read_text())
        assert old.content_hash() == lineage["store"]["content_hash"]
        assert old.to_pandas(columns=["id"])["id"].nunique() == N_BASE
    assert {**info, "store": None} == {**generation.info, "store": None}
    assert info["store"].endswith(f"@{generation.commit}:data/store")
    shown = json.loads(cli("info", "--repo", root, "--rev", generation.commit,
                           "--json").output)
    assert shown == {**info, "source_references": []}  # (no source gives energy_corrected)
    text = cli("info", "--repo", root, "--rev", "HEAD").output
    assert f"configurations {N_BASE + N_NEW} " in text

    diff = diff_revisions(root, generation.commit, "HEAD")
    assert set(diff.added) == added and diff.removed == []
    with_au = sum("Au" in frame.get_chemical_symbols() for frame in frames)
    assert diff.added_by_element == {k: v for k, v in {"Au": with_au, "Cu": N_NEW}.items()
                                     if v}
    assert diff.added_by_tag == {"gen_02": N_NEW}
    emt = Method(code="ASE", xc="EMT").fingerprint
    assert diff.added_by_method == {emt: {"n_configs": N_NEW,
                                          "settings": {"code": "ASE", "xc": "EMT"}}}
    assert diff.method_changes() == {"new": [emt], "gone": []}
    assert list(diff.methods_before) == ["unknown"]
    back = json.loads(cli("diff", generation.commit, "HEAD", "--repo", root,
                          "--json").output)
    assert back == diff.to_dict()
    reverse = json.loads(cli("diff", "HEAD", generation.commit, "--repo", root,
                             "--json").output)
    assert set(reverse["removed"]) == added and reverse["added"] == []
    assert reverse["removed_by_element"] == diff.added_by_element
    text = cli("diff", generation.commit, "--repo", root).output  # to the working tree
    assert f"{N_NEW} added, 0 removed" in text
    assert f"added by method    {emt}: {N_NEW}" in text
    assert f"DFT methods        1 -> 2; new: {emt}; gone: none" in text
    assert f"configurations {N_BASE} {N_NEW}" in " ".join(text.split())
    assert json.loads(cli("info", "--repo", root, "--rev", generation.commit, "--json"
                          ).output)["methods"] == {"unknown": {"n_configs": N_BASE,
                                                               "settings": {}}}
    now_methods = json.loads(cli("info", "--repo", root, "--rev", "HEAD", "--json"
                                 ).output)["methods"]
    assert {k: v["n_configs"] for k, v in now_methods.items()} == {"unknown": N_BASE,
                                                                   emt: N_NEW}
    assert all(f"+ {config_id}" in text for config_id in added)

    with pytest.raises(StoreError, match="unknown revision"):
        open_store(root, "no-such-rev")
    assert "not a git repository" in cli("diff", "HEAD", "--repo", tmp_path,
                                         expect=1).output
    first = run(["git", "rev-list", "--max-parents=0", "HEAD"], root).stdout.strip()
    assert "no store at data/store" in cli("info", "--repo", root, "--rev", first,
                                           expect=1).output


def test_duckdb_reads_the_store_directly(generation):
    """The store is plain Parquet: DuckDB counts per chemical system as Store.info does,
    from the directory and from a git revision through DVC's fsspec filesystem."""
    import duckdb
    import pyarrow.dataset as ds
    from dvc.api import DVCFileSystem
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    query = "SELECT chemical_system, count(*), sum(n_atoms) FROM {} GROUP BY 1"
    pattern = f"read_parquet('{generation.root / 'data' / 'store'}/*.parquet')"
    rows = duckdb.sql(query.format(pattern)).fetchall()
    assert {system: n for system, n, _ in rows} == generation.info["chemical_systems"]
    assert sum(atoms for *_, atoms in rows) == generation.info["n_atoms"]

    fs = DVCFileSystem(str(generation.root), rev=generation.commit)
    shards = [p for p in fs.ls("data/store", detail=False) if p.endswith(".parquet")]
    version = ds.dataset(  # noqa: F841 - DuckDB finds the dataset by its variable name
        shards, format="parquet", filesystem=PyFileSystem(FSSpecHandler(fs)))
    rows_at_rev = duckdb.sql(query.format("version")).fetchall()
    assert sorted(rows_at_rev) == sorted(rows)
    fs.close()

