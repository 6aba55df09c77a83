"""mlipstore against what users would use instead, on the same data, in one run.

    .venv/bin/python bench/run.py                 # N = 10,000 and 10N (a few minutes)
    .venv/bin/python bench/run.py --n 1000000 --no-peers --no-scaling --no-full-export

Every step runs in its own process; wall time and peak RSS (os.wait4) are measured from
outside. Ratios are taken within this run, so they hold on the machine it ran on. Results
go to ``bench/results/N.json`` and a Markdown table to ``bench/results/N.md``.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import click

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
MLIPSTORE = str(Path(PYTHON).with_name("mlipstore"))
DVC = str(Path(PYTHON).with_name("dvc"))
FILE_ROWS = 100_000  # configurations per generated extxyz file
ELEMENTS, LOW, HIGH = "Al,Cu,Ni", "-4.5", "-3.5"  # the filtered read: subset + eV/atom window


@dataclass
class Run:
    seconds: float
    peak_rss_mb: float
    output: str

    @property
    def json(self) -> dict:
        return json.loads(self.output.strip().splitlines()[-1])


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB (pages shared after a
    fork count once per process, so this overstates worker processes a little)."""
    total_kb, todo = 0, [pid]
    while todo:
        proc = Path(f"/proc/{todo.pop()}")
        try:
            status = (proc / "status").read_text()
            total_kb += int(status.split("VmRSS:")[1].split()[0]) if "VmRSS:" in status else 0
            for task in (proc / "task").iterdir():
                todo += map(int, (task / "children").read_text().split())
        except (OSError, ValueError):
            continue  # it ended meanwhile
    return total_kb / 1024


def run(args: list[str], cwd: Path | None = None) -> Run:
    """Run a command to completion: its wall time and the peak RSS of that process and
    its worker processes (os.wait4 gives the largest single one; a sampler every 20 ms
    adds them up)."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(HERE)})
    # the pipes are drained by threads meanwhile
    chunks: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda n, s: chunks.__setitem__(n, s.read()),
                                args=(n, s)) for n, s in (("out", proc.stdout),
                                                          ("err", proc.stderr))]
    tree_peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            tree_peak[0] = max(tree_peak[0], tree_rss_mb(proc.pid))

    threads = [*readers, threading.Thread(target=sample)]
    for t in threads:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"failed: {' '.join(args)}\n{chunks['err'].decode()[-3000:]}")
    return Run(seconds, max(usage.ru_maxrss / 1024, tree_peak[0]), chunks["out"].decode())


def generate(directory: Path, n: int, seed: int) -> list[Path]:
    """extxyz files holding ``n`` configurations, at most FILE_ROWS per file (cached)."""
    from generate import write_extxyz

    files = []
    for k, start in enumerate(range(0, n, FILE_ROWS)):
        path = directory / f"seed{seed}-{n}-{k:03d}.xyz"
        if not path.exists():
            write_extxyz(path.with_suffix(".tmp"), min(FILE_ROWS, n - start), seed + k)
            path.with_suffix(".tmp").rename(path)
        files.append(path)
    return files


def size_mb(paths) -> float:
    return sum(p.stat().st_size for p in paths) / 2**20


def store_files(store: Path) -> list[Path]:
    return sorted(store.glob("*.parquet"))


def ingest(files: list[Path], store: Path, *options: str) -> Run:
    shutil.rmtree(store, ignore_errors=True)
    return run([MLIPSTORE, "ingest", *map(str, files), "--store", str(store),
                         "--quiet", *options])


def export(store: Path, out: Path, *filters: str) -> Run:
    return run([MLIPSTORE, "export", "--store", str(store), "-o", str(out),
                         "--quiet", *filters])


def run_peers(work: Path, files: list[Path], store: Path, results: dict) -> None:
    """ase.io.read, ASE db and the plain pandas path against mlipstore on the same data."""
    py = [PYTHON, str(HERE / "peers.py")]
    db = work / "ase.db"
    db.unlink(missing_ok=True)
    results["ase_read_s"] = run([*py, "ase-read", *map(str, files)]).seconds
    results["ase_db_insert_s"] = run([*py, "ase-db-insert", str(db),
                                               *map(str, files)]).seconds
    plain = run([*py, "pandas-export", str(work / "plain.pckl.gzip"),
                          *map(str, files)])
    results["pandas_export_s"] = plain.seconds
    results["pandas_export_rss_mb"] = plain.peak_rss_mb
    # each read in a fresh process, three times: the median (a single one is noisy)
    db_reads = [run([*py, "ase-db-select", str(db), ELEMENTS, LOW, HIGH]).json
                for _ in range(3)]
    ours = [run([*py, "mlipstore-scan", str(store), ELEMENTS, LOW, HIGH]).json
            for _ in range(3)]
    if {r["rows"] for r in db_reads} != {r["rows"] for r in ours}:
        raise SystemExit(f"filtered reads disagree: ASE db {db_reads}, mlipstore {ours}")
    results["filtered_rows"] = ours[0]["rows"]
    results["ase_db_select_s"] = sorted(r["seconds"] for r in db_reads)[1]
    results["mlipstore_scan_s"] = sorted(r["seconds"] for r in ours)[1]
    results["ase_db_mb"] = size_mb([db])


def dvc_steps(work: Path, n: int, store: Path, results: dict) -> None:
    """dvc status on (a hard-linked copy of) the store; then append 1% new data and
    measure what push sends."""
    repo = work / "dvcrepo"
    shutil.rmtree(repo, ignore_errors=True)
    (repo / "data").mkdir(parents=True)
    remote = work / "remote"
    shutil.rmtree(remote, ignore_errors=True)
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"],
                [DVC, "remote", "add", "-d", "local", str(remote)]):
        run(cmd, cwd=repo)
    shutil.copytree(store, repo / "data" / "store", copy_function=os.link)
    run([DVC, "add", "-q", "data/store"], cwd=repo)
    run([DVC, "push", "-q"], cwd=repo)
    timings = [run([DVC, "status"], cwd=repo).seconds for _ in range(3)]
    results["dvc_status_s"] = sorted(timings)[1]
    before = {p: p.stat().st_size for p in remote.rglob("*") if p.is_file()}
    new = generate(work / "data", max(1, n // 100), seed=10**6 + n)
    run([MLIPSTORE, "ingest", *map(str, new), "--store", "data/store", "--quiet"], cwd=repo)
    run([DVC, "add", "-q", "data/store"], cwd=repo)
    run([DVC, "push", "-q"], cwd=repo)
    after = {p: p.stat().st_size for p in remote.rglob("*") if p.is_file()}
    added = [p for p in after if p not in before]
    results["push_new_objects"] = len(added)
    results["push_new_mb"] = sum(after[p] for p in added) / 2**20
    results["store_mb_after_append"] = size_mb(store_files(repo / "data" / "store"))


TARGETS = [  # (label, value, target, passes)
    ("ingest / ase.io.read (time)", "ingest_vs_ase_read", "<= 1.25", lambda r: r <= 1.25),
    ("ASE db insert / ingest (time)", "db_insert_vs_ingest", ">= 2", lambda r: r >= 2),
    ("plain pandas export / export (time)", "pandas_vs_export", ">= 3", lambda r: r >= 3),
    ("ASE db select / filtered scan (time)", "db_select_vs_scan", ">= 20", lambda r: r >= 20),
    ("store / extxyz (bytes)", "store_vs_extxyz", "<= 0.5", lambda r: r <= 0.5),
    ("store / ASE db (bytes)", "store_vs_db", "<= 0.8", lambda r: r <= 0.8),
    ("ingest peak RSS, 10N / N", "ingest_rss_10n_vs_n", "<= 1.2", lambda r: r <= 1.2),
    ("dvc status (s)", "dvc_status_s", "< 3", lambda r: r < 3),
    ("dvc push after +1% data / store bytes", "push_fraction", "<= 0.02", lambda r: r <= 0.02),
]


def ratios(r: dict) -> dict:
    out = {}
    pairs = {"ingest_vs_ase_read": ("ingest_s", "ase_read_s"),
             "db_insert_vs_ingest": ("ase_db_insert_s", "ingest_s"),
             "pandas_vs_export": ("pandas_export_s", "export_s"),
             "db_select_vs_scan": ("ase_db_select_s", "mlipstore_scan_s"),
             "store_vs_extxyz": ("store_mb", "extxyz_mb"),
             "store_vs_db": ("store_mb", "ase_db_mb"),
             "ingest_rss_10n_vs_n": ("ingest_10n_rss_mb", "ingest_rss_mb"),
             "push_fraction": ("push_new_mb", "store_mb_after_append")}
    for name, (a, b) in pairs.items():
        if a in r and b in r:
            out[name] = r[a] / r[b]
    if "dvc_status_s" in r:
        out["dvc_status_s"] = r["dvc_status_s"]
    return out


def mb(value: float) -> str:
    return f"{value:,.1f} MB" if value < 100 else f"{value:,.0f} MB"


def table(results: dict) -> str:
    lines = [f"N = {results['n']:,} configurations of {results['atoms_per_config']} atoms; "
             f"{results['machine']}", "",
             "| measure | mlipstore | peer | ratio | target | |", "|---|---|---|---|---|---|"]
    r, q = results["raw"], results["ratios"]
    rows = {
        "ingest_vs_ase_read": (f"{r.get('ingest_s', 0):.1f} s", f"{r.get('ase_read_s', 0):.1f} s"
                               " (ase.io.read)"),
        "db_insert_vs_ingest": (f"{r.get('ingest_s', 0):.1f} s",
                                f"{r.get('ase_db_insert_s', 0):.1f} s (ASE db insert)"),
        "pandas_vs_export": (f"{r.get('export_s', 0):.1f} s",
                             f"{r.get('pandas_export_s', 0):.1f} s (read + pandas to_pickle)"),
        "db_select_vs_scan": (f"{r.get('mlipstore_scan_s', 0) * 1e3:.0f} ms",
                              f"{r.get('ase_db_select_s', 0) * 1e3:.0f} ms (ASE db select), "
                              f"{r.get('filtered_rows', 0):,} rows"),
        "store_vs_extxyz": (mb(r.get("store_mb", 0)), f"{mb(r.get('extxyz_mb', 0))} (extxyz)"),
        "store_vs_db": (mb(r.get("store_mb", 0)), f"{mb(r.get('ase_db_mb', 0))} (ASE db)"),
        "ingest_rss_10n_vs_n": (f"{mb(r.get('ingest_rss_mb', 0))} at N, "
                                f"{mb(r.get('ingest_10n_rss_mb', 0))} at 10N", ""),
        "dvc_status_s": (f"{r.get('dvc_status_s', 0):.2f} s", ""),
        "push_fraction": (f"{r.get('push_new_objects', 0)} objects, "
                          f"{r.get('push_new_mb', 0):.1f} MB", ""),
    }
    for label, key, target, passes in TARGETS:
        if key in q:
            ours, peer = rows[key]
            ok = "pass" if passes(q[key]) else "FAIL"
            lines.append(f"| {label} | {ours} | {peer} | {q[key]:.3g} | {target} | {ok} |")
    lines += ["", "| mlipstore step | wall time | peak RSS |", "|---|---|---|"]
    for label, key in (("ingest", "ingest"), ("info", "info"), ("export, whole store", "export"),
                       (f"export, filtered (elements {ELEMENTS}, {LOW} to {HIGH} eV/atom: "
                        f"{r.get('filtered_export_rows', 0):,} configurations)",
                        "filtered_export"),
                       ("ingest at 10N (1 process)", "ingest_10n"),
                       ("export at 10N", "export_10n")):
        if f"{key}_s" in r:
            rss = r.get(f"{key}_rss_mb")
            lines.append(f"| {label} | {r[f'{key}_s']:.1f} s | "
                         + (f"{mb(rss)} |" if rss else "|"))
    return "\n".join(lines)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


@click.command()
@click.option("--n", default=10_000, show_default=True, help="Configurations.")
@click.option("--work", default="bench/work", show_default=True, type=click.Path(),
              help="Scratch directory (generated data is kept for reruns).")
@click.option("--peers/--no-peers", default=True, help="Time ase.io.read, ASE db, pandas.")
@click.option("--scaling/--no-scaling", default=True, help="Peak RSS at 10N too.")
@click.option("--dvc/--no-dvc", "with_dvc", default=True, help="dvc status and push.")
@click.option("--full-export/--no-full-export", default=True,
              help="Export the whole store too (the filtered export always runs).")
@click.option("--out", default=str(HERE / "results"), show_default=True,
              type=click.Path(file_okay=False), help="Where N.json and N.md go.")
def main(n: int, work: str, peers: bool, scaling: bool, with_dvc: bool, full_export: bool,
         out: str) -> None:
    """Benchmark mlipstore against ase.io.read, an ASE db and the plain pandas path."""
    work_dir = Path(work).resolve()
    raw: dict = {}
    started = time.perf_counter()
    files = generate(work_dir / "data", n, seed=0)
    raw["extxyz_mb"] = size_mb(files)
    store = work_dir / "store"
    step = ingest(files, store)
    raw["ingest_s"], raw["ingest_rss_mb"] = step.seconds, step.peak_rss_mb
    raw["store_mb"] = size_mb(store_files(store))
    step = run([MLIPSTORE, "info", "--store", str(store)])
    raw["info_s"], raw["info_rss_mb"] = step.seconds, step.peak_rss_mb
    if full_export:
        step = export(store, work_dir / "export.pckl.gzip")
        raw["export_s"], raw["export_rss_mb"] = step.seconds, step.peak_rss_mb
    step = export(store, work_dir / "filtered.pckl.gzip", "--elements", ELEMENTS,
                  "--min-energy-per-atom", LOW, "--max-energy-per-atom", HIGH)
    raw["filtered_export_s"], raw["filtered_export_rss_mb"] = step.seconds, step.peak_rss_mb
    raw["filtered_export_rows"] = int(step.output.split()[1])  # "wrote N configurations"
    if peers:
        run_peers(work_dir, files, store, raw)
    if scaling:
        big = generate(work_dir / "data", 10 * n, seed=1)
        # as many processes as at N (one: below PARALLEL_MIN_BYTES), so that the memory of
        # the two is compared like for like
        step = ingest(big, work_dir / "store10", "-j", "1")
        raw["ingest_10n_s"], raw["ingest_10n_rss_mb"] = step.seconds, step.peak_rss_mb
        step = export(work_dir / "store10", work_dir / "export10.pckl.gzip")
        raw["export_10n_s"], raw["export_10n_rss_mb"] = step.seconds, step.peak_rss_mb
        shutil.rmtree(work_dir / "store10")
    if with_dvc:
        dvc_steps(work_dir, n, store, raw)
    raw["total_s"] = time.perf_counter() - started
    results = {"n": n, "atoms_per_config": 64, "machine": machine(), "raw": raw,
               "ratios": ratios(raw)}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{n}.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / f"{n}.md").write_text(table(results) + "\n")
    click.echo(json.dumps(raw, indent=2))
    click.echo(table(results))


if __name__ == "__main__":
    main()
