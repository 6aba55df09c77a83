"""Any version of the store: read it at a git revision through DVC, without a checkout,
and list what changed between two versions.

A revision's shards come from the local DVC cache where they are there, else from the
project's default DVC remote; ``repo`` may be a local project or any git URL DVC can
clone (the remote's credentials come from the usual DVC/AWS/SSH configuration).
"""

from __future__ import annotations

import json
import posixpath
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from .schema import check_schema_version, schema
from .shards import REPLACES_KEY, ShardName, elements_of
from .store import DEFAULT_STORE, Store, StoreError, _counts

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

ID_COLUMNS = ["id", "chemical_system", "tags"]


def live_shards(names: list[str], replaced_by: dict[str, list[str]]) -> list[str]:
    """The shard names a reader sees: complete transactions only, minus the shards a
    committed compaction replaced (``replaced_by``: compact shard -> names it replaces)."""
    parsed = {n: ShardName.parse(n) for n in names}
    groups: dict[str, list[str]] = defaultdict(list)
    for name, shard in parsed.items():
        if shard is not None:
            groups[shard.txn].append(name)
    complete = [n for group in groups.values() if len(group) == parsed[group[0]].n
                for n in group]
    replaced = {old for n in complete for old in replaced_by.get(n, [])}
    return sorted(n for n in complete if n not in replaced)


class RevisionStore(Store):
    """A store read through an fsspec filesystem: for ``open_store``, DVC's view of a git
    revision, so nothing is checked out. ``root`` is the store's path in ``fs``,
    ``label`` names the version in messages and in ``info()``. Read-only: scan,
    to_pandas, iter_atoms, ids, content_hash and info work as on ``Store``."""

    def __init__(self, fs: AbstractFileSystem, root: str, label: str) -> None:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        self.fs, self.root, self.label = fs, root.rstrip("/"), label
        self.arrow_fs = PyFileSystem(FSSpecHandler(fs))
        self._sizes: dict[str, int] | None = None

    def close(self) -> None:
        """Release the DVC repository (and any temporary clone) behind the filesystem."""
        close = getattr(self.fs, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> RevisionStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _listing(self) -> dict[str, int]:
        """Shard file name -> size in bytes, as committed at the revision."""
        if self._sizes is None:
            if not self.fs.isdir(self.root):  # absent, or an output never produced
                raise StoreError(f"no store at {self.root} in {self.label}")
            entries = self.fs.ls(self.root, detail=True)
            self._sizes = {posixpath.basename(e["name"]): e["size"] for e in entries
                           if e["type"] == "file" and e["name"].endswith(".parquet")}
        return self._sizes

    def _size(self, name: str) -> int:
        """Bytes of one shard (DVC's directory manifests do not record sizes)."""
        size = self._listing()[name]
        if size is None:
            with self.fs.open(self._path(name), "rb") as fh:
                size = self._sizes[name] = fh.seek(0, 2)
        return int(size)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def shard_paths(self) -> list[str]:
        """The committed shards at the revision (paths in the filesystem), oldest first."""
        names = list(self._listing())
        replaced_by = {}
        for name in names:
            shard = ShardName.parse(name)
            if shard is not None and shard.kind == "compact":
                meta = pq.read_schema(self._path(name), filesystem=self.arrow_fs).metadata
                replaced_by[name] = json.loads((meta or {}).get(REPLACES_KEY, b"[]"))
        return [self._path(n) for n in live_shards(names, replaced_by)]

    def dataset(self) -> ds.Dataset:
        """A pyarrow Dataset over the revision's shards, read through the filesystem."""
        return ds.dataset(self.shard_paths(), schema=schema(), format="parquet",
                          filesystem=self.arrow_fs)

    def info(self) -> dict:
        """``Store.info`` of the revision; ``store`` names the revision."""
        paths = self.shard_paths()
        for path in paths:
            meta = pq.read_schema(path, filesystem=self.arrow_fs).metadata
            check_schema_version(meta, f"{self.label}:{path}")
        table = self.dataset().to_table(
            columns=["n_atoms", "chemical_system", "free_energy", "stress", "tags",
                     "source_format"])
        return {
            "store": f"{self.label}:{self.root}",
            "n_configs": table.num_rows,
            "n_atoms": int(pc.sum(table.column("n_atoms")).as_py() or 0),
            "elements": elements_of(table),
            "n_shards": len(paths),
            "bytes": sum(self._size(posixpath.basename(p)) for p in paths),
            "with_free_energy": table.num_rows - table.column("free_energy").null_count,
            "with_stress": table.num_rows - table.column("stress").null_count,
            "formats": _counts(table.column("source_format")),
            "chemical_systems": _counts(table.column("chemical_system")),
            "tags": _counts(pc.list_flatten(table.column("tags"))),
        }

    def writing(self, *args, **kwargs):
        """Not possible: a revision of the store is read-only."""
        raise StoreError(f"{self.label} is a past version of the store: read-only")

    transaction = compact = verify = writing


def open_store(repo: str | Path = ".", rev: str | None = None,
               path: str | Path = DEFAULT_STORE) -> Store:
    """The store at ``path`` in the project ``repo`` (a directory or a git URL) at git
    revision ``rev`` (branch, tag, commit, experiment), read through DVC without a
    checkout, its data from the DVC cache or else the default remote; ``rev=None`` in a
    local project is its working tree (a plain ``Store``). Close a ``RevisionStore`` (or
    use it in ``with``); ``clean_clones()`` then deletes temporary clones of git URLs."""
    if rev is None and Path(repo).is_dir():
        return Store(Path(repo) / path)
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.scm import RevError

    fs = DVCFileSystem(str(repo), rev=rev)
    label = f"{repo}@{rev}" if rev else str(repo)
    try:
        fs.repo  # noqa: B018 - opens the repository at the revision: fail early
    except RevError as err:
        fs.close()
        raise StoreError(f"unknown revision {rev!r} in {repo}: {err}") from err
    except DvcException as err:  # not a git repository, cannot clone, not DVC
        fs.close()
        raise StoreError(f"cannot open {repo} as a DVC project: {err}") from err
    return RevisionStore(fs, Path(path).as_posix(), label)


def clean_clones() -> None:
    """Delete the temporary git clones and caches DVC made for repositories given by URL
    (all of this process's: call it when no RevisionStore of a URL is open)."""
    from dvc.repo.open_repo import clean_repos

    clean_repos()


@dataclass(frozen=True)
class StoreDiff:
    """Configurations added and removed between two versions, by content id, with how
    many of each contain each element and carry each tag."""

    added: list[str]
    removed: list[str]
    added_by_element: dict[str, int] = field(default_factory=dict)
    removed_by_element: dict[str, int] = field(default_factory=dict)
    added_by_tag: dict[str, int] = field(default_factory=dict)
    removed_by_tag: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what ``mlipstore diff --json`` prints)."""
        return {"n_added": len(self.added), "n_removed": len(self.removed),
                "added_by_element": self.added_by_element,
                "removed_by_element": self.removed_by_element,
                "added_by_tag": self.added_by_tag, "removed_by_tag": self.removed_by_tag,
                "added": self.added, "removed": self.removed}


def _only(table: pa.Table, ids: list[str]) -> pa.Table:
    """Rows of ``table`` whose id is in ``ids``."""
    return table.filter(pc.is_in(table.column("id"), pa.array(ids, pa.string())))


def _per_element(table: pa.Table) -> dict[str, int]:
    """How many configurations contain each element."""
    return dict(sorted(_counts(pc.list_flatten(
        pc.split_pattern(table.column("chemical_system"), "-"))).items()))


def _per_tag(table: pa.Table) -> dict[str, int]:
    """How many configurations carry each tag."""
    return dict(sorted(_counts(pc.list_flatten(table.column("tags"))).items()))


def diff_stores(old: Store, new: Store) -> StoreDiff:
    """What ``new`` has that ``old`` lacks (added) and the reverse (removed)."""
    before, after = old.scan(columns=ID_COLUMNS), new.scan(columns=ID_COLUMNS)
    old_ids = set(before.column("id").to_pylist())
    new_ids = set(after.column("id").to_pylist())
    added, removed = sorted(new_ids - old_ids), sorted(old_ids - new_ids)
    gained, lost = _only(after, added), _only(before, removed)
    return StoreDiff(added, removed, _per_element(gained), _per_element(lost),
                     _per_tag(gained), _per_tag(lost))


def diff_revisions(repo: str | Path, rev_a: str, rev_b: str | None = None,
                   path: str | Path = DEFAULT_STORE) -> StoreDiff:
    """``diff_stores`` between the store at ``rev_a`` and at ``rev_b`` (default: the
    working tree of a local project)."""
    old = open_store(repo, rev_a, path)
    new = open_store(repo, rev_b, path)
    try:
        return diff_stores(old, new)
    finally:
        for store in (old, new):
            if isinstance(store, RevisionStore):
                store.close()
