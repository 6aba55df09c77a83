"""git, in one module: through scmrepo (the git layer DVC itself uses) to read a
repository and to tag, and through the git command where it does what the user's git
would: ``git init`` (it honours the user's ``init.defaultBranch`` and templates) and
staging and committing (a commit of chosen paths only, ``git commit --only``, leaves
whatever else the user staged as it was; a commit without an identity fails as git's)."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)


def _scm(root: Path):
    """scmrepo's Git of the repository holding ``root``; None outside one."""
    from scmrepo.exceptions import SCMError
    from scmrepo.git import Git

    try:
        return Git(str(root))
    except SCMError:
        return None


def is_repo(root: str | Path) -> bool:
    """Whether ``root`` is inside a git repository."""
    git = _scm(Path(root))
    if git is not None:
        git.close()
    return git is not None


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def init(root: str | Path) -> None:
    """Make ``root`` a git repository unless it is one already."""
    if not (Path(root) / ".git").exists():
        _git(Path(root), "init", "-q")


def state(root: str | Path) -> dict:
    """The checked-out commit (None before the first, or outside git) and whether tracked
    files differ from it (None outside git), for a potential's lineage."""
    from scmrepo.exceptions import SCMError

    git = _scm(Path(root))
    if git is None:
        return {"commit": None, "dirty": None}
    try:
        try:
            commit = git.get_rev()
        except SCMError:  # no commit yet
            commit = None
        return {"commit": commit, "dirty": git.is_dirty(untracked_files=False)}
    finally:
        git.close()


def commit_paths(root: str | Path, paths: list[str], message: str) -> str | None:
    """Commit ``paths`` (relative to ``root``; new, changed or deleted) and nothing else;
    the new commit, or None (outside git, nothing changed, or git refused: logged)."""
    root = Path(root)
    if not is_repo(root):
        return None
    # a path that neither exists nor is tracked would fail the whole `git add`
    paths = sorted(p for p in paths
                   if (root / p).exists() or _git(root, "ls-files", "--", p).stdout)
    if not paths:  # (no paths at all would mean the whole tree to git)
        return None
    staging = _git(root, "add", "-A", "--", *paths)
    if staging.returncode != 0:  # e.g. a path git ignores; the others are staged
        log.warning("git add: %s", staging.stderr.strip())
    staged = [name for name in _git(root, "diff", "--cached", "--name-only", "--relative",
                                    "-z", "--", *paths).stdout.split("\0") if name]
    if not staged:
        return None
    done = _git(root, "commit", "-q", "-m", message, "--only", "--", *staged)
    if done.returncode != 0:
        log.warning("could not commit: %s", done.stderr.strip())
        return None
    return state(root)["commit"]


def commit_all(root: str | Path, message: str) -> bool:
    """Stage everything and commit it; False (files left staged) where git refuses, e.g.
    without a user identity."""
    root = Path(root)
    _git(root, "add", "-A")
    return _git(root, "commit", "-q", "-m", message).returncode == 0


def tag(root: str | Path, name: str, commit: str) -> str | None:
    """Tag ``commit`` as ``name`` unless that tag exists; the commit the tag names after
    the call (an existing tag is never moved), None if it could not be made."""
    from scmrepo.exceptions import SCMError

    git = _scm(Path(root))
    if git is None:
        return None
    try:
        tagged = git.get_ref(f"refs/tags/{name}")  # follows an annotated tag to its commit
        if tagged is None:
            git.tag(name, commit)
            tagged = commit
        return tagged
    except SCMError as err:
        log.warning("git tag %s: %s", name, err)
        return None
    finally:
        git.close()
