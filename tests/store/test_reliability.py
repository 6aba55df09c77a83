"""Crash safety, concurrent writers, integrity checks and failures outside mlipstore.

Counts (kills survived, writers run) are listed under "figures measured by the tests".
"""

from __future__ import annotations

import multiprocessing
import os
import random
import resource
import signal
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor

import ase.io
import pandas as pd
import pytest

from helpers import (
    BIN,
    DEMO,
    REPO,
    TINY_BASIS,
    cli,
    emt_frames,
    new_project,
    run,
    split_extxyz,
    tree_digest,
)
from mlipstore import Store, ingest
from mlipstore.training.export import export_store

# Children to kill are forked (they inherit the imports: a kill costs ms), but never from
# pytest's process: it runs threads (Arrow's pools, xdist's I/O), and a fork copies a lock
# another thread holds, held for good (a kill test once hung on tqdm's). They are forked
# from the helper of the ``kill`` fixture, a fresh process that runs no other thread.
# Children that need no quick start come from a fork server (as ingest's workers do).
FORK = multiprocessing.get_context("fork")
CLEAN = multiprocessing.get_context("forkserver")


def _batch(tmp_path, k: int, frames: int = 40):
    path = tmp_path / "batches" / f"batch_{k:03d}.extxyz"
    path.parent.mkdir(exist_ok=True)
    ase.io.write(path, emt_frames(frames, seed=1000 + k), format="extxyz")
    return path


def _ingest_child(paths, store_dir):
    ingest(paths, Store(store_dir, create=True))


def _compact_child(store_dir):
    Store(store_dir).compact(min_rows=10**9)


def _export_child(store_dir, out):
    export_store(Store(store_dir), out)


def _kill_at_random(target, args, delay: float) -> bool:
    """Run target(*args) in a forked child and SIGKILL it after ``delay`` s; True if the
    kill landed before the child finished. Runs in the helper of the ``kill`` fixture."""
    child = FORK.Process(target=target, args=args)
    child.start()
    child.join(delay)
    landed = child.is_alive()
    if landed:
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    return landed


@pytest.fixture
def kill(monkeypatch):
    """``_kill_at_random`` run in a helper process (see FORK), spawned with an environment
    in which numpy's BLAS and Arrow's jemalloc start no idle threads either."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    monkeypatch.setenv("JE_ARROW_MALLOC_CONF", "background_thread:false")
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as helper:
        yield lambda *args: helper.submit(_kill_at_random, *args).result()


def _ids(store_dir) -> list[str]:
    return Store(store_dir).scan(columns=["id"]).column("id").to_pylist()


def test_kills_leave_the_store_before_or_after(tmp_path, record_property, kill):
    store_dir = tmp_path / "store"
    Store(store_dir, create=True)
    rng = random.Random(7)
    ingest([_batch(tmp_path, 998)], Store(tmp_path / "probe", create=True))  # warm up
    probe = _batch(tmp_path, 999)
    t0 = time.perf_counter()
    ingest([probe], Store(tmp_path / "probe", create=True))
    duration = time.perf_counter() - t0
    window = 2.0  # kills fall in [0, window * duration]; steered to land about half the time
    landed = {"ingest": 0, "compact": 0, "export": 0}
    outcomes = {"before": 0, "after": 0}
    kills = 0
    for k in range(50):
        batch = _batch(tmp_path, k)
        new = {c.id for c in _configs(batch)}
        before = set(_ids(store_dir))
        hit = kill(_ingest_child, ([batch], store_dir), rng.uniform(0, window * duration))
        landed["ingest"] += hit
        window *= 1.25 if hit else 0.8  # whatever this machine's speed and load
        kills += 1
        seen = _ids(store_dir)  # a reader right after the kill, before any recovery
        assert len(seen) == len(set(seen))
        assert set(seen) in (before, before | new), f"kill {k}: partial state"
        outcomes["after" if set(seen) == before | new else "before"] += 1
        problems, _ = Store(store_dir).verify()
        assert problems == []
        ingest([batch], Store(store_dir))  # the re-run completes it, without duplicates
        after = _ids(store_dir)
        assert set(after) == before | new and len(after) == len(set(after))
        if k % 10 == 9:  # compaction and export are killed too
            ids = set(after)
            landed["compact"] += kill(_compact_child, (store_dir,), rng.uniform(0, 0.5))
            out = tmp_path / "out.pckl.gzip"
            out.unlink(missing_ok=True)
            landed["export"] += kill(_export_child, (store_dir, out), rng.uniform(0, 1.0))
            kills += 2
            assert set(_ids(store_dir)) == ids and len(_ids(store_dir)) == len(ids)
            if out.exists():  # an export is complete or absent, never half-written
                assert len(pd.read_pickle(out, compression="gzip")) == len(ids)
    with Store(store_dir).writing():
        pass  # the next writer clears what killed writers left
    assert not (store_dir / "_staging").exists() and Store(store_dir).verify()[0] == []
    record_property("figure", (
        f"kills survived: {kills} ({landed} landed mid-call; one ingest takes "
        f"{duration * 1000:.0f} ms; store as before {outcomes['before']}, as after "
        f"{outcomes['after']} times); store: {len(_ids(store_dir))} configurations"))
    assert kills >= 50 and landed["ingest"] >= 15
    assert outcomes["before"] and outcomes["after"]


def _configs(path):
    from mlipstore.ingestion.formats import iread
    return [f.config for f in iread(path)]


def test_concurrent_writers_all_land(tmp_path, record_property):
    store_dir = tmp_path / "store"
    Store(store_dir, create=True)
    batches = [_batch(tmp_path, k, frames=30) for k in range(6)]
    expected = set().union(*({c.id for c in _configs(b)} for b in batches))
    writers = [CLEAN.Process(target=_ingest_child, args=([b], store_dir)) for b in batches]
    for w in writers:
        w.start()
    views = []
    while any(w.is_alive() for w in writers):
        views.append(len(_ids(store_dir)))  # a reader during the writes
    for w in writers:
        w.join()
        assert w.exitcode == 0
    final = _ids(store_dir)
    assert set(final) == expected and len(final) == len(expected)
    assert all(v % 30 == 0 for v in views)  # whole transactions only, never part of one
    assert views == sorted(views)
    assert Store(store_dir).verify()[0] == []
    record_property("figure", (
        f"writers run: {len(writers)} at once; reader saw {sorted(set(views))} rows"))


def test_verify_finds_a_flipped_byte(tmp_path, emt_xyz):
    store_dir = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store_dir, "--quiet")
    result = cli("verify", "--store", store_dir)
    assert "0 problem(s)" in result.stdout
    (shard,) = store_dir.glob("*.parquet")
    data = bytearray(shard.read_bytes())
    for where in (len(data) // 2, len(data) - 100):  # a data page, then the footer
        damaged = bytearray(data)
        damaged[where] ^= 0x01
        shard.write_bytes(damaged)
        result = cli("verify", "--store", store_dir, expect=1)
        assert shard.name in result.stderr and "do not match the checksum" in result.stderr
    shard.write_bytes(data)
    cli("verify", "--store", store_dir)


def _limit_file_size():
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails: EFBIG


def test_a_write_error_commits_nothing(tmp_path, emt_xyz):
    store_dir = tmp_path / "store"
    cli("ingest", emt_xyz, "--store", store_dir, "--quiet")
    before = tree_digest(store_dir)
    big = _batch(tmp_path, 1, frames=200)
    result = subprocess.run([str(BIN / "mlipstore"), "ingest", str(big), "--store",
                             str(store_dir), "--quiet"], preexec_fn=_limit_file_size,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "cannot write to the store" in result.stderr and "nothing was committed" in \
        result.stderr
    assert tree_digest(store_dir) == before
    cli("ingest", big, "--store", store_dir, "--quiet")  # with room again, it lands
    assert len(_ids(store_dir)) == 6 + 200


def test_pacemaker_writing_garbage_registers_nothing(tmp_path):
    root = new_project(tmp_path / "proj", {"select.method": "none",
                                           "training.max_epochs": 2, **TINY_BASIS})
    split_extxyz(DEMO, [(root / "data" / "raw" / "a_TiAl_tutorial.xyz", 0, 30)])
    mlipstore = str(BIN / "mlipstore")
    for stage in ("ingest", "export", "select"):
        run([mlipstore, "stage", stage, "--quiet"], root)
    result = run([mlipstore, "stage", "train", "--quiet"], root, check=False,
                 FAKE_PACEMAKER_GARBAGE="1")
    assert result.returncode == 1 and "pace_yaml2yace failed" in result.stderr
    assert not (root / "models").exists() or not list((root / "models").iterdir())


def test_no_dvc_project_is_a_clear_error(tmp_path):
    from mlipstore.pipeline.cycle import CycleError, TrainingCycle

    with pytest.raises(CycleError, match="not an mlipstore project with DVC"):
        TrainingCycle(tmp_path).run([])
    result = run([str(BIN / "mlipstore"), "cycle"], tmp_path, check=False)
    assert result.returncode == 1 and "mlipstore init" in result.stderr


def test_pickle_is_never_loaded_without_consent(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pckl.gzip"
    import gzip
    import pickle

    class Exploit:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with gzip.open(evil, "wb") as fh:
        pickle.dump(Exploit(), fh)
    result = cli("ingest", evil, "--store", tmp_path / "store", "--quiet", expect=1)
    assert "refusing to unpickle" in result.stderr and not marker.exists()
    # directories are walked too: still refused, still not loaded
    cli("ingest", tmp_path, "--store", tmp_path / "store2", "--quiet", expect=1)
    assert not marker.exists()


def test_yaml_is_loaded_safely(tmp_path):
    from mlipstore.params import ConfigError, load_params

    marker = tmp_path / "pwned"
    (tmp_path / "params.yaml").write_text(
        f"training: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ConfigError):
        load_params(tmp_path / "params.yaml")
    assert not marker.exists()
    sources = [*(REPO / "mlipstore").rglob("*.py")]
    assert len(sources) > 30
    for source in sources:
        text = source.read_text()
        assert "yaml.load(" not in text and "unsafe_load" not in text, source


def test_hostile_paths_stay_outside_the_store(tmp_path):
    raw = tmp_path / "in put=dir"
    deep = raw
    for level in range(40):
        deep = deep / f"level {level}=x"
    deep.mkdir(parents=True)
    ase.io.write(deep / "deep file=1.extxyz", emt_frames(2, seed=3), format="extxyz")
    (raw / "loop").symlink_to(raw, target_is_directory=True)  # a symlink loop
    (deep / "back").symlink_to(raw, target_is_directory=True)
    store_dir = tmp_path / "store"
    outside_before = {p for p in tmp_path.rglob("*") if store_dir not in p.parents}
    result = cli("ingest", raw, "--store", store_dir, "--quiet")
    assert result.stdout.startswith("2 new, 0 duplicate, 0 rejected from 1 file(s)")
    outside_after = {p for p in tmp_path.rglob("*") if store_dir not in p.parents}
    assert outside_after - outside_before == {store_dir}
    source = Store(store_dir).scan(columns=["source_path"]).column("source_path")[0].as_py()
    assert source.endswith("deep file=1.extxyz")
