"""DVC remotes of a project: where ``dvc push`` sends the store and the potentials.

A remote is any DVC remote URL: a local directory, ``s3://bucket/path`` (AWS or any
S3-protocol server through ``endpointurl``) or ``ssh://user@host/path``.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

DEFAULT_REMOTE_NAME = "storage"


def default_remote_path(root: str | Path) -> Path:
    """The local remote ``mlipstore init`` configures: ``<root>-dvc-remote`` beside the
    project (an absolute path, so every clone on this machine finds it)."""
    root = Path(root).resolve()
    return root.parent / f"{root.name}-dvc-remote"


def is_url(remote: str) -> bool:
    """True for a URL with a scheme (s3://, ssh://, ...), False for a local path."""
    return "://" in remote


def add_remote(root: str | Path, url: str | Path, name: str = DEFAULT_REMOTE_NAME,
               default: bool = True, options: dict[str, str] | None = None,
               local_options: dict[str, str] | None = None) -> str:
    """Add (or replace) the DVC remote ``name`` of the project at ``root``, like
    ``dvc remote add [-d]`` plus ``dvc remote modify [--local]``: ``options`` go to the
    committed ``.dvc/config``, ``local_options`` (credentials) to the git-ignored
    ``.dvc/config.local``. A local path is stored absolute. Returns the URL stored."""
    from dvc.repo import Repo

    url = str(url) if is_url(str(url)) else str(Path(url).resolve())
    with Repo(str(root)) as repo:
        with repo.config.edit("repo") as conf:
            conf["remote"][name] = {"url": url, **(options or {})}
            if default:
                conf["core"]["remote"] = name
        if local_options:
            with repo.config.edit("local") as conf:
                conf["remote"][name] = dict(local_options)
    return url


def remote_objects(root: str | Path, name: str | None = None) -> dict[str, int]:
    """Every object in the project's remote ``name`` (default: the default remote), as
    path relative to the remote's root -> size in bytes."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remote = repo.cloud.get_remote(name)
        if not remote.fs.exists(remote.path):
            return {}
        paths = list(remote.fs.find(remote.path))
        return {posixpath.relpath(path, remote.path): int(info["size"])
                for path, info in zip(paths, remote.fs.info(paths), strict=True)}


def remote_url(root: str | Path, name: str | None = None) -> str | None:
    """The URL of the project's remote ``name`` (default: the default remote), or None."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = name or repo.config["core"].get("remote")
        return repo.config["remote"][name]["url"] if name else None
