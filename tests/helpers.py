"""What the tests share: paths of the repository and of ../shared's real DFT data, small
EMT-labelled structures, the CLI run in-process, throw-away DVC projects with the fast fake
pacemaker, and S3/SSH servers on loopback for the remote tests."""

from __future__ import annotations

import ast
import hashlib
import json
import logging
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from click.testing import CliRunner

from mlipstore.cli import main

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DFT = SHARED / "dft"
PACEMAKER_DATA = SHARED / "pacemaker"

needs_shared = pytest.mark.skipif(
    not DFT.is_dir(), reason=f"real DFT test data not found at {SHARED} (../shared is absent)")

# every file of ../shared/data/dft with the key map it needs
SHARED_FILES = {
    "ACEpotentials.jl/tutorials/TiAl_tutorial.xyz": "energy=energy,forces=force,virial=virial",
    "BOTNet-datasets/dataset_3BPA/train_300K.xyz": None,
    "dpdata/tests/poscars/OUTCAR.h2o.md": None,
    "dpdata/tests/poscars/Ti-O-Ti-v6/OUTCAR": None,
    "dpdata/tests/poscars/Ti-aimd-nwrite0/vasprun.xml": None,
    "dpdata/tests/qe.scf/02.out": None,
    "dpdata/tests/fhi_aims/out_scf": None,
    "q-e/test-suite/pw_md/benchmark.out.git.inp=md.in.args=1": None,
}


def emt_frames(n: int = 6, seed: int = 0, symbols: str = "Cu") -> list:
    """Small rattled fcc cells labelled by ASE's EMT calculator (energy, forces, stress)."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        atoms = bulk(symbols, "fcc", a=3.6 + 0.02 * i, cubic=True).repeat((1, 1, 2))
        if symbols == "Cu" and i % 2:
            atoms.symbols[0] = "Au"
        atoms.rattle(0.05, seed=int(rng.integers(1 << 30)))
        atoms.calc = EMT()
        atoms.get_potential_energy()
        atoms.get_stress()
        frames.append(atoms)
    return frames


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file below root: equal digests mean a byte-identical tree."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args: str, expect: int | None = 0):
    """Run the mlipstore CLI in-process; assert the exit code unless expect is None."""
    result = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    if expect is not None:
        assert result.exit_code == expect, result.output + result.stderr
    return result



# -- DVC projects with the fake pacemaker --

BIN = Path(sys.executable).parent
FAKE_BIN = Path(__file__).parent / "fake_bin"
DEMO = REPO / "data" / "raw" / "TiAl_tutorial.xyz"
# a small ACE basis for tests with the fake pacemaker (which writes the unfitted basis)
TINY_BASIS = {"training.ace_basis_config.number_of_functions_per_element": 10,
              "training.ace_basis_config.nradmax_by_orders": [6, 2, 1],
              "training.ace_basis_config.lmax_by_orders": [0, 1, 1]}
# a quick pipeline run with the fake pacemaker: that basis, a 40-structure selection
SMALL_FIT = {"select.n_structures": 40, "training.max_epochs": 4,
             "select.max_basis_functions": 200, **TINY_BASIS}


def env(fake: bool = True, **extra: str) -> dict:
    """Environment with mlipstore/dvc on PATH (and the fake pacemaker first if asked)."""
    path = [str(FAKE_BIN)] if fake else []
    e = dict(os.environ, PATH=os.pathsep.join([*path, str(BIN), os.environ["PATH"]]),
             GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.org",
             GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.org",
             DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    e.update(extra)
    return e


def run(cmd: list[str], cwd: Path, fake: bool = True, check: bool = True, timeout: int = 900,
        **extra: str) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env(fake, **extra), capture_output=True,
                            text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n" \
                                       f"{result.stderr[-4000:]}"
    return result


def ran_stages(output: str) -> list[str]:
    """The stages `dvc repro` / `dvc exp run` ran, in order, but for ``validate``, which
    runs whenever params.yaml changes and changes nothing (tests/test_pipeline.py)."""
    return [line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage '") and "'validate'" not in line]


def extxyz_frames(source: Path) -> list[str]:
    """The frames of an extxyz file, each as its text."""
    lines = source.read_text().splitlines(keepends=True)
    frames, i = [], 0
    while i < len(lines):
        n = int(lines[i])
        frames.append("".join(lines[i:i + n + 2]))
        i += n + 2
    return frames


def split_extxyz(source: Path, parts: list[tuple[Path, int, int]]) -> None:
    """Write frames [start, stop) of an extxyz file to each path, byte for byte."""
    frames = extxyz_frames(source)
    for path, start, stop in parts:
        path.write_text("".join(frames[start:stop]))


def new_project(root: Path, params: dict | None = None) -> Path:
    """`mlipstore init` a project; params override keys of params.yaml (dotted names)."""
    import yaml

    run([str(BIN / "mlipstore"), "init", str(root)], cwd=root.parent)
    if params:
        doc = yaml.safe_load((root / "params.yaml").read_text())
        for dotted, value in params.items():
            node = doc
            *parents, last = dotted.split(".")
            for key in parents:
                node = node[key]
            node[last] = value
        (root / "params.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        run(["git", "commit", "-qam", "test params"], cwd=root)
    return root


def metrics(root: Path) -> dict:
    return json.loads((root / "metrics.json").read_text())


def remote_objects(root: str | Path, name: str | None = None) -> dict[str, int]:
    """Every object in the project's DVC remote ``name`` (default: the default remote), as
    path relative to the remote's root -> size in bytes."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        remote = repo.cloud.get_remote(name)
        if not remote.fs.exists(remote.path):
            return {}
        paths = list(remote.fs.find(remote.path))
        return {posixpath.relpath(path, remote.path): int(info["size"])
                for path, info in zip(paths, remote.fs.info(paths), strict=True)}


# -- servers on 127.0.0.1 for the remote tests: S3 (moto) and SSH (sshd) --

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}
SSHD = shutil.which("sshd") or next(
    (p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)), None)


@contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """moto's S3 server on a free loopback port with an empty ``bucket``; yields its
    endpoint URL and stops it afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=bucket)
        yield endpoint
    finally:
        server.stop()


@dataclass(frozen=True)
class SSHServer:
    port: int
    user: str
    keyfile: Path     # the client's private key, authorized on the server
    home: Path        # a HOME whose .ssh/known_hosts holds the server's host key


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
                   check=True, capture_output=True)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                if sock.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port}")


def _children(pid: int) -> list[int]:
    """Ids of the processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the process ended meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _stop(proc: subprocess.Popen) -> None:
    """Stop sshd and the per-connection processes it forked (a client still connected,
    such as DVC's SSH filesystem cached in this process, would keep them alive)."""
    sessions = _children(proc.pid)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass


@contextmanager
def ssh_server(tmp: Path) -> Iterator[SSHServer]:
    """sshd on a free loopback port with its own host key and config, accepting one
    generated client key for the current user; skips visibly where sshd is missing."""
    if SSHD is None or shutil.which("ssh-keygen") is None:
        pytest.skip("openssh-server is not installed (.ci/run installs it with apt-get)")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    tmp.mkdir(parents=True, exist_ok=True)
    _keygen(tmp / "host_key")
    _keygen(tmp / "client_key")
    shutil.copy(tmp / "client_key.pub", tmp / "authorized_keys")
    port = _free_port()
    (tmp / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {tmp / 'host_key'}\n"
        f"PidFile {tmp / 'sshd.pid'}\nAuthorizedKeysFile {tmp / 'authorized_keys'}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nPermitRootLogin prohibit-password\n"
        "Subsystem sftp internal-sftp\n")
    home = tmp / "home"
    (home / ".ssh").mkdir(parents=True)
    host_key = (tmp / "host_key.pub").read_text().split()[:2]
    (home / ".ssh" / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_key)}\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(tmp / "sshd_config")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        try:
            _wait_for_port(port, proc)
        except RuntimeError as err:
            pytest.skip(f"cannot start sshd on loopback: {err}")
        import getpass

        yield SSHServer(port, getpass.getuser(), tmp / "client_key", home)
    finally:
        _stop(proc)
        proc.stderr.close()


# -- the package's own imports (dvc.yaml's code dependencies, the layering test) --
def module_file(name: str) -> Path | None:
    """The file of module or package ``name`` (dotted, e.g. mlipstore.store.store)."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    """The dotted name of a package file (a package's __init__.py names the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, source: str | None = None) -> set[str]:
    """The mlipstore modules (dotted names) that the file ``path`` imports anywhere in it,
    at module level or inside functions, relative or absolute; ``source`` instead of the
    file's text, to check an edited copy."""
    name = module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source if source is not None else path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "mlipstore"}
        elif isinstance(node, ast.ImportFrom):
            base = (package[:len(package) - node.level + 1] if node.level else [])
            target = base + (node.module.split(".") if node.module else [])
            if not target or target[0] != "mlipstore":
                continue
            for alias in node.names:  # `from . import _git` imports a module
                sub = ".".join([*target, alias.name])
                found.add(sub if module_file(sub) else ".".join(target))
    return found


def import_closure(module: str) -> set[str]:
    """Files (relative to the repository) of ``module`` and of everything it imports,
    directly or not, packages' __init__.py included."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for k in range(1, len(parts) + 1):  # importing a.b.c runs a, a.b, a.b.c
            path = module_file(".".join(parts[:k]))
            if path is None or str(path.relative_to(REPO)) in seen:
                continue
            seen.add(str(path.relative_to(REPO)))
            todo += imported_modules(path)
    return seen
