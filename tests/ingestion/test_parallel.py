"""Parallel ingest: worker processes store exactly what one process stores."""

from __future__ import annotations

import gzip
import importlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import ase.io
import numpy as np
import pyarrow.parquet as pq

from helpers import cli, emt_frames, tree_digest
from mlipstore import Store
from mlipstore.ingestion.formats import plan
from mlipstore.ingestion.ingest import ingest

# the module
ingest_module = importlib.import_module("mlipstore.ingestion.ingest")
workers_module = importlib.import_module("mlipstore._workers")


def _inputs(tmp_path):
    """extxyz with a rejected frame and repeats; one whose frame 30 cannot be parsed (the
    rest of that file is skipped); a gzipped extxyz (one chunk); an ASE trajectory."""
    raw = tmp_path / "raw"
    raw.mkdir()
    frames = emt_frames(40, seed=3)
    frames[9].calc.results["forces"][0, 0] = np.nan
    ase.io.write(raw / "a.extxyz", frames + frames[:5], format="extxyz")
    ase.io.write(raw / "b.extxyz", emt_frames(40, seed=4), format="extxyz")
    lines = (raw / "b.extxyz").read_text().splitlines(keepends=True)
    per_frame = len(lines) // 40
    atom_line = lines[30 * per_frame + 2].split()
    atom_line[1] = "1.0.0"
    lines[30 * per_frame + 2] = " ".join(atom_line) + "\n"
    (raw / "b.extxyz").write_text("".join(lines))
    with gzip.open(raw / "c.extxyz.gz", "wt") as fh:
        ase.io.write(fh, emt_frames(12, seed=5), format="extxyz")
    ase.io.write(raw / "d.traj", emt_frames(6, seed=6) + frames[:2])
    return raw


def _stored(store_dir):
    store = Store(store_dir)
    row_groups = [[md.row_group(i).num_rows for i in range(md.num_row_groups)]
                  for md in (pq.ParquetFile(p).metadata for p in store.shard_paths())]
    return store.scan().drop_columns(["ingested_at"]), row_groups


def test_parallel_ingest_stores_what_serial_ingest_stores(tmp_path, monkeypatch):
    raw = _inputs(tmp_path)
    monkeypatch.setattr(ingest_module, "FRAMES_PER_TASK", 7)
    assert len(plan(raw / "a.extxyz", "extxyz", 7)) == 7  # 45 frames
    assert len(plan(raw / "c.extxyz.gz", "extxyz", 7)) == 1

    submitted = []

    class CountingPool(workers_module.ProcessPoolExecutor):
        def submit(self, fn, *args):
            submitted.append(args[0].path.name)
            return super().submit(fn, *args)

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", CountingPool)
    serial = ingest([raw], Store(tmp_path / "serial", create=True), workers=1)
    assert not submitted
    result = cli("ingest", raw, "--store", tmp_path / "parallel", "-j", "2", "--quiet",
                 expect=1)
    assert submitted.count("a.extxyz") == 7 and len(submitted) == 7 + 6 + 1 + 1

    # 39 + 30 + 12 + 8 new (the traj's copies of a's frames are not rounded to extxyz's
    # digits, so they differ); the NaN frame and the cut frame rejected; 5 repeats
    assert (serial.new, serial.duplicate, len(serial.rejected)) == (89, 5, 2)
    assert serial.summary() in result.stdout
    assert "\n".join(f"rejected: {line}" for line in serial.rejection_lines()) \
        in result.stderr
    assert "b.extxyz: frame 30: cannot parse" in result.stderr
    table, row_groups = _stored(tmp_path / "serial")
    parallel_table, parallel_row_groups = _stored(tmp_path / "parallel")
    assert table.equals(parallel_table)  # same rows, same order
    assert row_groups == parallel_row_groups


class _Exit9:
    """Unpickled (in a worker process), it ends that process with exit status 9."""

    def __reduce__(self):
        return os._exit, (9,)


def test_dead_worker_fails_the_call_cleanly(tmp_path, monkeypatch):
    raw = _inputs(tmp_path)
    store_dir = tmp_path / "store"
    cli("ingest", raw / "c.extxyz.gz", "--store", store_dir, "--quiet")
    before = tree_digest(store_dir)

    class DyingPool(workers_module.ProcessPoolExecutor):
        # workers are not forked from this process: a patch here does not reach them, but
        # what they receive does: the worker given b.extxyz's task dies unpickling it
        def submit(self, fn, *args):
            if args[0].path.name == "b.extxyz":
                return super().submit(fn, _Exit9())
            return super().submit(fn, *args)

    monkeypatch.setattr(workers_module, "ProcessPoolExecutor", DyingPool)
    result = cli("ingest", raw, "--store", store_dir, "-j", "2", "--quiet", expect=1)
    assert "a worker process died" in result.stderr
    assert "nothing was committed" in result.stderr
    assert tree_digest(store_dir) == before


POOL_SCRIPT = """
import sys, time
from mlipstore._workers import worker_pool
pool = worker_pool(2)
futures = [pool.submit(time.sleep, 60) for _ in range(2)]
time.sleep(1)
print(*pool._processes, flush=True)
time.sleep(60)
"""


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (one init has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _descendants(pid: int) -> list[int]:
    """Every running process below ``pid``: children, their children, ..."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return [p for p in found if _running(p)]


def test_a_killed_ingest_leaves_no_process_behind():
    """Not a worker, nor what starts them (a fork server), nor multiprocessing's helpers."""
    proc = subprocess.Popen([sys.executable, "-c", POOL_SCRIPT], stdout=subprocess.PIPE,
                            text=True)
    workers = [int(pid) for pid in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(map(_running, workers))
    below = _descendants(proc.pid)
    assert set(workers) <= set(below)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(map(_running, below)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in below if _running(pid)]


HELD = threading.Lock()


def _held_lock_is_free() -> bool:  # in a worker
    if HELD.acquire(blocking=False):
        HELD.release()
        return True
    return False


def test_workers_do_not_inherit_a_held_lock():
    """A worker forked from this process would get a copy of HELD, locked, with no thread
    there that could ever release it (a deadlock, had it waited for it). Workers are
    started by a fresh process, not forked from this one, which runs threads."""
    with HELD, ingest_module.worker_pool(2) as pool:
        assert pool.submit(_held_lock_is_free).result()
        assert pool.submit(os.getppid).result() != os.getpid()
        assert pool._mp_context.get_start_method() != "fork"


NO_GUARD_SCRIPT = """
import sys
from mlipstore import Store
from mlipstore.ingestion.ingest import ingest

with open(sys.argv[3], "a") as fh:  # once per run of this file, in whichever process
    fh.write("ran\\n")
report = ingest([sys.argv[1]], Store(sys.argv[2], create=True), workers=2)
print(report.summary())
"""


def test_a_script_without_main_guard_ingests_in_parallel(tmp_path):
    """Workers do not run the calling script again, and no fork of a process with threads
    is warned about (Python 3.12+ warns; an error filter would drop the warning)."""
    raw = _inputs(tmp_path)
    script = tmp_path / "script.py"
    script.write_text(NO_GUARD_SCRIPT)
    ran = tmp_path / "ran.txt"
    result = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", str(script),
                             str(raw), str(tmp_path / "parallel"), str(ran)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "use of fork()" not in result.stderr
    assert ran.read_text() == "ran\n"
    serial = ingest([raw], Store(tmp_path / "serial", create=True), workers=1)
    assert result.stdout == serial.summary() + "\n"
    table, row_groups = _stored(tmp_path / "serial")
    parallel_table, parallel_row_groups = _stored(tmp_path / "parallel")
    assert table.equals(parallel_table) and row_groups == parallel_row_groups
