"""Servers the remote tests start on 127.0.0.1 and stop again: S3 (moto) and SSH (sshd)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

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
