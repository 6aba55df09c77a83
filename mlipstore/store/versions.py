"""Any version of the store: read it at a git revision through DVC, without a checkout,
and list what changed between two versions.

A revision's shards come from the local DVC cache where they are there, else from the
project's default DVC remote; ``repo`` may be a local project or any git URL DVC can
clone (the remote's credentials come from the usual DVC/AWS/SSH configuration).
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

from .method import summarize
from .store import DEFAULT_STORE, Store, StoreError, StoreReader, _counts

if TYPE_CHECKING:
    from fsspec import AbstractFileSystem

ID_COLUMNS = ["id", "chemical_system", "tags", "method", "method_fingerprint"]


class RevisionStore(StoreReader):
    """A store read through an fsspec filesystem: for ``open_store``, DVC's view of a git
    revision, so nothing is checked out. ``root`` is the store's path in ``fs``,
    ``label`` names the version in messages and in ``info()``. Read-only: it
    has ``StoreReader``'s methods only."""

    def __init__(self, fs: AbstractFileSystem, root: str, label: str) -> None:
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        self.fs, self.root, self._version = fs, root.rstrip("/"), label
        self.arrow_fs = PyFileSystem(FSSpecHandler(fs))
        self._sizes: dict[str, int] | None = None

    def close(self) -> None:
        """Release the DVC repository (and any temporary clone) behind the filesystem."""
        close = getattr(self.fs, "close", None)
        if close is not None:
            close()

    @property
    def label(self) -> str:
        return f"{self._version}:{self.root}"

    def _listing(self) -> dict[str, int | None]:
        """Shard file name -> size in bytes, as committed at the revision."""
        if self._sizes is None:
            if not self.fs.isdir(self.root):  # absent, or an output never produced
                raise StoreError(f"no store at {self.root} in {self._version}")
            entries = self.fs.ls(self.root, detail=True)
            self._sizes = {posixpath.basename(e["name"]): e["size"] for e in entries
                           if e["type"] == "file" and e["name"].endswith(".parquet")}
        return self._sizes

    def _shard_names(self) -> list[str]:
        return list(self._listing())

    def _shard_path(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _shard_bytes(self, path: str) -> int:
        """Bytes of one shard (DVC's directory manifests do not record sizes)."""
        name = posixpath.basename(path)
        size = self._listing()[name]
        if size is None:
            with self.fs.open(path, "rb") as fh:
                size = self._sizes[name] = fh.seek(0, 2)
        return int(size)



def open_store(repo: str | Path = ".", rev: str | None = None,
               path: str | Path = DEFAULT_STORE) -> StoreReader:
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
    many of each contain each element, carry each tag and have each DFT method; and the
    methods of both versions (``store.method.summarize``), to show what changed."""

    added: list[str]
    removed: list[str]
    added_by_element: dict[str, int] = field(default_factory=dict)
    removed_by_element: dict[str, int] = field(default_factory=dict)
    added_by_tag: dict[str, int] = field(default_factory=dict)
    removed_by_tag: dict[str, int] = field(default_factory=dict)
    added_by_method: dict[str, dict] = field(default_factory=dict)
    removed_by_method: dict[str, dict] = field(default_factory=dict)
    methods_before: dict[str, dict] = field(default_factory=dict)
    methods_after: dict[str, dict] = field(default_factory=dict)

    def method_changes(self) -> dict[str, list[str]]:
        """Fingerprints that are new in the second version (``new``) or gone from it
        (``gone``)."""
        return {"new": [k for k in self.methods_after if k not in self.methods_before],
                "gone": [k for k in self.methods_before if k not in self.methods_after]}

    def to_dict(self) -> dict:
        """Plain JSON-able dict (what ``mlipstore diff --json`` prints)."""
        return {"n_added": len(self.added), "n_removed": len(self.removed),
                "added_by_element": self.added_by_element,
                "removed_by_element": self.removed_by_element,
                "added_by_tag": self.added_by_tag, "removed_by_tag": self.removed_by_tag,
                "added_by_method": self.added_by_method,
                "removed_by_method": self.removed_by_method,
                "methods_before": self.methods_before, "methods_after": self.methods_after,
                "method_changes": self.method_changes(),
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


def diff_stores(old: StoreReader, new: StoreReader) -> StoreDiff:
    """What ``new`` has that ``old`` lacks (added) and the reverse (removed)."""
    before, after = old.scan(columns=ID_COLUMNS), new.scan(columns=ID_COLUMNS)
    old_ids = set(before.column("id").to_pylist())
    new_ids = set(after.column("id").to_pylist())
    added, removed = sorted(new_ids - old_ids), sorted(old_ids - new_ids)
    gained, lost = _only(after, added), _only(before, removed)
    return StoreDiff(added, removed, _per_element(gained), _per_element(lost),
                     _per_tag(gained), _per_tag(lost), summarize(gained), summarize(lost),
                     summarize(before), summarize(after))


def diff_revisions(repo: str | Path, rev_a: str, rev_b: str | None = None,
                   path: str | Path = DEFAULT_STORE) -> StoreDiff:
    """``diff_stores`` between the store at ``rev_a`` and at ``rev_b`` (default: the
    working tree of a local project)."""
    with open_store(repo, rev_a, path) as old, open_store(repo, rev_b, path) as new:
        return diff_stores(old, new)
