"""A project: ``mlipstore init`` makes a new one that works like this repository's own,
and its DVC remotes say where ``dvc push`` sends the store and the potentials (a local
directory, ``s3://bucket/path`` on AWS or any S3-protocol server through ``endpointurl``,
or ``ssh://user@host/path``)."""

from __future__ import annotations

import logging
from importlib.resources import files
from pathlib import Path

from . import _git
from ._io import atomic_write
from .errors import ProjectError
from .layout import Layout

DEFAULT_REMOTE_NAME = "storage"
TEMPLATES = files("mlipstore") / "templates"
# the loop's DFT input folders (external route): the outputs computed there are large and
# enter the project through `mlipstore cycle`
GITIGNORE = "/.venv/\n__pycache__/\n/explore/*/dft/\n"


def template_text(name: str) -> str:
    """A template of the package (dvc.yaml, params.yaml)."""
    return (TEMPLATES / name).read_text()


def init_project(root: str | Path, remote: str | Path | None = None,
                 add_default_remote: bool = True) -> Path:
    """Create a project at ``root``: git and DVC initialised, dvc.yaml, params.yaml, an
    empty inbox data/raw, and the default DVC remote ``storage`` (``remote``, a path or
    URL; default: the directory ``<root>-dvc-remote`` beside the project, unless DVC
    already has a default remote; none if ``add_default_remote`` is False); committed
    where git knows who you are. Returns the root."""
    from dvc.repo import Repo

    layout = Layout(Path(root))
    for existing in ("dvc.yaml", "params.yaml"):
        if (layout.root / existing).exists():
            raise ProjectError(f"{layout.root / existing} exists: not overwriting a project")
    layout.inbox.mkdir(parents=True, exist_ok=True)
    (layout.inbox / ".gitkeep").touch()
    for name in ("dvc.yaml", "params.yaml"):
        with atomic_write(layout.root / name) as fh:
            fh.write(template_text(name))
    with atomic_write(layout.root / ".gitignore") as fh:
        fh.write(GITIGNORE)
    _git.init(layout.root)
    if not (layout.root / ".dvc").exists():
        # DVC would say "You can now commit the changes to git.": this function commits
        dvc_log = logging.getLogger("dvc")
        level = dvc_log.level
        dvc_log.setLevel(logging.WARNING)
        try:
            Repo.init(str(layout.root))
        finally:
            dvc_log.setLevel(level)
    if add_default_remote and (remote is not None or remote_url(layout.root) is None):
        add_remote(layout.root, remote or default_remote_path(layout.root))
    # without a git identity this commit fails; the files stay staged for the user's own
    _git.commit_all(layout.root, "mlipstore init")
    return layout.root


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


def remote_url(root: str | Path, name: str | None = None) -> str | None:
    """The URL of the project's remote ``name`` (default: the default remote), or None."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        name = name or repo.config["core"].get("remote")
        return repo.config["remote"][name]["url"] if name else None
