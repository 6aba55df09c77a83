"""``mlipstore init``: a new project that works like this repository's own."""

from __future__ import annotations

import logging
import subprocess
from importlib.resources import files
from pathlib import Path

from .layout import Layout

TEMPLATES = files("mlipstore") / "templates"
# the loop's DFT input folders (external route): the outputs computed there are large and
# enter the project through `mlipstore cycle`
GITIGNORE = "/.venv/\n__pycache__/\n/explore/*/dft/\n"


class ProjectError(RuntimeError):
    """The project cannot be created; the message says why."""


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

    from .remotes import add_remote, default_remote_path, remote_url

    layout = Layout(Path(root))
    for existing in ("dvc.yaml", "params.yaml"):
        if (layout.root / existing).exists():
            raise ProjectError(f"{layout.root / existing} exists: not overwriting a project")
    layout.inbox.mkdir(parents=True, exist_ok=True)
    (layout.inbox / ".gitkeep").touch()
    for name in ("dvc.yaml", "params.yaml"):
        (layout.root / name).write_text(template_text(name))
    (layout.root / ".gitignore").write_text(GITIGNORE)
    if not (layout.root / ".git").exists():
        _git(layout.root, "init", "-q")
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
    _git(layout.root, "add", "-A")
    # without a git identity this commit fails; the files stay staged for the user's own
    _git(layout.root, "commit", "-q", "-m", "mlipstore init", check=False)
    return layout.root


def _git(root: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise ProjectError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip() if result.returncode == 0 else ""
