"""RevisionStore over any fsspec filesystem, and diff_stores, without git or DVC (the
DVC side is exercised in test_sharing.py)."""

from __future__ import annotations

import shutil
from collections import Counter

import ase.io
import pytest
from fsspec.implementations.local import LocalFileSystem

from helpers import emt_frames
from mlipstore.ingestion.ingest import ingest
from mlipstore.store.shards import ShardName
from mlipstore.store.store import Store, StoreError, StoreReader, live_shards
from mlipstore.store.versions import RevisionStore, diff_stores


def _ingest(store: Store, tmp_path, frames, name: str, tags=()) -> None:
    path = tmp_path / f"{name}.extxyz"
    ase.io.write(path, frames, format="extxyz")
    assert ingest([path], store, tags=list(tags), progress=False).ok


def test_revision_store_sees_what_store_sees(store_dir, tmp_path):
    """Through a filesystem, a half-finished compaction and an incomplete transaction
    are hidden exactly as Store hides them: every configuration once."""
    store = Store(store_dir, create=True)
    for seed in range(3):
        _ingest(store, tmp_path, emt_frames(2, seed=10 + seed), f"f{seed}")
    old = store.shard_paths()
    kept = {p.name: p.read_bytes() for p in old}
    store.compact()
    for name, data in kept.items():  # as if killed after committing the compacted shard
        (store_dir / name).write_bytes(data)
    first = ShardName.parse(old[0].name)
    orphan = ShardName("part", "20990101T000000000000Z-deadbeef", 1, 2, first.digest)
    shutil.copy(old[0], store_dir / str(orphan))  # part 1 of 2: never committed

    rev = RevisionStore(LocalFileSystem(), str(store_dir), "local")
    assert [p.rsplit("/", 1)[1] for p in rev.shard_paths()] == \
        [p.name for p in store.shard_paths()]
    assert len(rev.shard_paths()) == 1
    assert rev.ids() == store.ids() and rev.scan().num_rows == 6
    assert {**rev.info(), "store": None} == {**store.info(), "store": None}
    # read-only by construction: a sibling of Store over the same reader, without writers
    assert isinstance(rev, StoreReader) and not isinstance(rev, Store)
    assert not any(hasattr(rev, name) for name in ("transaction", "writing", "compact",
                                                    "migrate", "verify"))
    with pytest.raises(StoreError, match="no store"):
        RevisionStore(LocalFileSystem(), str(tmp_path / "absent"), "local").info()


def test_live_shards_names():
    a = "part-20260101T000000000000Z-aaaaaaaa-0001of0002-0123456789abcdef.parquet"
    b = "part-20260101T000000000000Z-aaaaaaaa-0002of0002-0123456789abcdee.parquet"
    c = "part-20260102T000000000000Z-bbbbbbbb-0001of0002-0123456789abcded.parquet"
    d = "compact-20260103T000000000000Z-cccccccc-0001of0001-0123456789abcdec.parquet"
    assert live_shards([b, a, c, "notes.parquet"], {}) == [a, b]
    assert live_shards([a, b, d], {d: [a, b]}) == [d]


def test_diff_counts_per_element_and_tag(tmp_path):
    """Two versions sharing some configurations: added and removed, by element and tag,
    against counts taken from the frames themselves."""
    frames = emt_frames(8, seed=3)
    old, new = Store(tmp_path / "old", create=True), Store(tmp_path / "new", create=True)
    _ingest(old, tmp_path, frames[:5], "old", tags=["first"])
    _ingest(new, tmp_path, frames[3:5], "kept", tags=["first"])
    _ingest(new, tmp_path, frames[5:], "more", tags=["second", "md"])
    diff = diff_stores(old, new)
    assert set(diff.added) == new.ids() - old.ids() and len(diff.added) == 3
    assert set(diff.removed) == old.ids() - new.ids() and len(diff.removed) == 3

    def per_element(subset):
        return dict(Counter(s for f in subset for s in set(f.get_chemical_symbols())))

    assert diff.added_by_element == per_element(frames[5:])
    assert diff.removed_by_element == per_element(frames[:3])
    assert diff.added_by_tag == {"md": 3, "second": 3}
    assert diff.removed_by_tag == {"first": 3}
    assert diff_stores(new, new).to_dict()["n_added"] == 0
