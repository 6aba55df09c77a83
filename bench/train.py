"""Training: pacemaker's two evaluators per iteration, and the pipeline around a fit.

    .venv/bin/python bench/train.py          # about 15 minutes on 2 cores

1. Seconds per optimizer iteration of ``evaluator: pyace`` (scipy BFGS with numerical
   gradients: a loss evaluation per parameter) and ``tensorpot`` (TensorFlow gradients)
   on the same data, the TiAl demo's training pool (301 structures), at 10, 50 and 300
   functions per element. Each run is its own pacemaker process; the time per iteration
   is the median gap between pacemaker's logged iterations (tensorpot's first iteration,
   which builds the TensorFlow graph, is reported apart). pyace at 300 functions would
   take hours per iteration: its loss evaluations are timed for ``--pyace-sample`` seconds
   and multiplied by the evaluations per iteration (per parameter, as measured at 10 and
   50 functions), which is labelled as an extrapolation.
2. The demo pipeline with the default params.yaml, each stage (``mlipstore stage NAME``)
   in its own process: the wall time of every stage and the fit's own time (from the
   lineage); the pipeline overhead is everything else as a fraction of the fit.

Peak memory is that of the process tree (``run.run``). Results: ``bench/results/train.json``
and ``train.md``.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import click
import yaml

from run import HERE, MLIPSTORE, machine, run

REPO = HERE.parent
DEMO = REPO / "data" / "raw" / "TiAl_tutorial.xyz"
PACEMAKER = str(Path(sys.executable).with_name("pacemaker"))
FUNCTIONS = (10, 50, 300)
ITERATIONS = {"tensorpot": 20, "pyace": {10: 6, 50: 3}}
# "2026-12-02 19:47:21,367 - pyace.metrics_aggregator - INFO - Iteration   #1    (65 evals)"
STAMPED = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})[^\n\r]*?"
                     r"Iteration\s+#(\d+)\s+\((\d+) evals\)")
PARAMS = re.compile(r"Number of params\./funcs:\s+(\d+)/(\d+)")
STAGES = ("ingest", "export", "select", "train")


def project(root: Path) -> Path:
    """A fresh project with the demo data (the default params.yaml)."""
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([MLIPSTORE, "init", str(root), "--no-remote"], check=True,
                   capture_output=True)
    shutil.copy(DEMO, root / "data" / "raw" / DEMO.name)
    return root


def input_yaml(pool: Path, evaluator: str, functions: int, iterations: int) -> dict:
    """pacemaker's input for the demo pool: the default TrainingConfig at this size."""
    from mlipstore.params import Params
    from mlipstore.training.pacemaker import PacemakerRunner

    training = Params().training
    basis = training.ace_basis_config.model_copy(
        update={"number_of_functions_per_element": functions})
    config = training.model_copy(update={"ace_basis_config": basis, "evaluator": evaluator,
                                         "max_epochs": iterations})
    doc = PacemakerRunner(config).generate_input_yaml(pool, ["Al", "Ti"])
    doc["backend"]["display_step"] = 10_000  # no extended statistics in between
    return doc


def iterations_of(log: str) -> list[tuple[float, int, int]]:
    """(time in s, iteration, loss evaluations so far) for every logged iteration (each
    is logged twice, to stdout and stderr: the first is kept)."""
    out: dict[int, tuple[float, int, int]] = {}
    for stamp, iteration, evals in STAMPED.findall(log):
        t = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
        out.setdefault(int(iteration), (t, int(iteration), int(evals)))
    return sorted(out.values(), key=lambda p: p[1])


def fit(work: Path, pool: Path, evaluator: str, functions: int, iterations: int) -> dict:
    """Run pacemaker to the end; seconds per iteration, evaluations per iteration."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.yaml").write_text(yaml.safe_dump(
        input_yaml(pool, evaluator, functions, iterations), sort_keys=False))
    step = run(["sh", "-c", f"'{PACEMAKER}' input.yaml > pacemaker.log 2>&1"], cwd=work)
    log = (work / "pacemaker.log").read_text(errors="replace")
    points = iterations_of(log)
    if len(points) < 2:
        raise SystemExit(f"{work}: pacemaker logged {len(points)} iterations:\n{log[-3000:]}")
    gaps = [b[0] - a[0] for a, b in zip(points, points[1:], strict=False)]
    evals = [b[2] - a[2] for a, b in zip(points, points[1:], strict=False)]
    n_params = int(PARAMS.search(log)[1])
    return {"evaluator": evaluator, "functions_per_element": functions,
            "parameters": n_params, "iterations": points[-1][1],
            "s_per_iteration": statistics.median(gaps),
            "evals_per_iteration": statistics.median(evals),
            "first_iteration_s": points[0][0] - _start(log), "wall_s": step.seconds,
            "peak_rss_mb": step.peak_rss_mb, "extrapolated": False}


def _start(log: str) -> float:
    stamp = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})", log)[1]
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def pyace_sampled(work: Path, pool: Path, functions: int, seconds: float,
                  evals_per_parameter: float) -> dict:
    """pyace at a size where one iteration takes too long: time its loss evaluations for
    ``seconds``, then stop it; an iteration is evals_per_parameter x parameters of them."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "input.yaml").write_text(yaml.safe_dump(
        input_yaml(pool, "pyace", functions, 1), sort_keys=False))
    log_path = work / "out.txt"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([PACEMAKER, "input.yaml"], cwd=work, stdout=out,
                                stderr=subprocess.STDOUT)
        first = None
        while proc.poll() is None:
            text = log_path.read_text(errors="replace")
            count = len(re.findall(r"Eval (\d+):", text))
            if first is None and count:
                first = (time.perf_counter(), count)
            if first and time.perf_counter() - first[0] > seconds:
                break
            time.sleep(0.5)
        proc.kill()
        proc.wait()
    text = log_path.read_text(errors="replace")
    count = len(re.findall(r"Eval (\d+):", text))
    per_eval = (time.perf_counter() - first[0]) / max(count - first[1], 1)
    n_params = int(PARAMS.search(text)[1])
    evals = evals_per_parameter * n_params
    return {"evaluator": "pyace", "functions_per_element": functions, "parameters": n_params,
            "iterations": 0, "s_per_evaluation": per_eval,
            "evals_per_iteration": evals, "s_per_iteration": per_eval * evals,
            "sampled_evaluations": count - first[1], "extrapolated": True}


def pipeline(root: Path) -> dict:
    """The demo pipeline, stage by stage, with the default params.yaml."""
    out = {}
    for name in STAGES:
        step = run([MLIPSTORE, "stage", name, "--quiet"], cwd=root)
        out[name] = {"wall_s": step.seconds, "peak_rss_mb": step.peak_rss_mb,
                     "summary": step.output.strip().splitlines()[-1]}
    lineage = json.loads((root / "models" / "potential_gen_01.json").read_text())
    total = sum(s["wall_s"] for s in out.values())
    fit_s = lineage["timings"]["fit_s"]
    return {"stages": out, "total_s": total, "fit_s": fit_s,
            "overhead_s": total - fit_s, "overhead_fraction": (total - fit_s) / fit_s,
            "metrics": lineage["metrics"]}


def table(results: dict) -> str:
    rows = ["| evaluator | functions per element | parameters | s per iteration | "
            "first iteration (s) | peak RSS | tensorpot / pyace per iteration |",
            "|---|---|---|---|---|---|---|"]
    fits = results["fits"]
    by = {(f["evaluator"], f["functions_per_element"]): f for f in fits}
    for f in fits:
        pyace = by.get(("pyace", f["functions_per_element"]))
        ratio = (f"{f['s_per_iteration'] / pyace['s_per_iteration']:.2g}"
                 if f["evaluator"] == "tensorpot" and pyace else "")
        first = f"{f['first_iteration_s']:.1f}" if "first_iteration_s" in f else ""
        rss = f"{f['peak_rss_mb']:,.0f} MB" if "peak_rss_mb" in f else ""
        per_it = (f"{f['s_per_iteration']:,.1f} (extrapolated from "
                  f"{f['sampled_evaluations']} loss evaluations)" if f["extrapolated"]
                  else f"{f['s_per_iteration']:.3g}")
        rows.append(f"| {f['evaluator']} | {f['functions_per_element']} | {f['parameters']:,} "
                    f"| {per_it} | {first} | {rss} | {ratio} |")
    p = results["pipeline"]
    rows += ["", "| demo pipeline stage (default params.yaml) | wall time | peak RSS |",
             "|---|---|---|"]
    rows += [f"| {name} | {s['wall_s']:.1f} s | {s['peak_rss_mb']:,.0f} MB |"
             for name, s in p["stages"].items()]
    test = p["metrics"]["test"]
    rows += ["", f"Fit (pacemaker itself): {p['fit_s']:.0f} s of {p['total_s']:.0f} s; the "
             f"pipeline around it (ingest, export, select, conversion, active set, metrics, "
             f"plots, registration): {p['overhead_s']:.0f} s = "
             f"{100 * p['overhead_fraction']:.1f}% of the fit. Test errors of the default "
             f"demo fit: energy {test['energy_rmse']:.1f} meV/atom, forces "
             f"{test['forces_rmse']:.1f} meV/Å (RMSE, {test['n_structures']} structures).",
             "", results["machine"]]
    return "\n".join(rows)


@click.command()
@click.option("--work", default=str(HERE / "work" / "train"), show_default=True,
              type=click.Path(file_okay=False))
@click.option("--pyace-sample", default=60.0, show_default=True,
              help="Seconds of pyace loss evaluations timed at 300 functions.")
@click.option("--out", default=str(HERE / "results"), show_default=True,
              type=click.Path(file_okay=False))
def main(work: str, pyace_sample: float, out: str) -> None:
    """Benchmark pacemaker's evaluators and the pipeline around a fit."""
    work_dir = Path(work).resolve()
    root = project(work_dir / "demo")
    for name in STAGES[:2]:
        subprocess.run([MLIPSTORE, "stage", name, "--quiet"], cwd=root, check=True)
    pool = work_dir / "pool.pckl.gzip"
    shutil.copy(root / "data" / "export" / "pool.pckl.gzip", pool)
    fits = []
    for functions in FUNCTIONS:
        fits.append(fit(work_dir / f"tensorpot-{functions}", pool, "tensorpot", functions,
                        ITERATIONS["tensorpot"]))
        click.echo(fits[-1], err=True)
        if functions in ITERATIONS["pyace"]:
            fits.append(fit(work_dir / f"pyace-{functions}", pool, "pyace", functions,
                            ITERATIONS["pyace"][functions]))
        else:
            measured = [f for f in fits if f["evaluator"] == "pyace"]
            per_parameter = max(f["evals_per_iteration"] / f["parameters"] for f in measured)
            fits.append(pyace_sampled(work_dir / f"pyace-{functions}", pool, functions,
                                      pyace_sample, per_parameter))
        click.echo(fits[-1], err=True)
    results = {"machine": machine(), "fits": fits, "pipeline": pipeline(project(root))}
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "train.json").write_text(json.dumps(results, indent=2) + "\n")
    (out_dir / "train.md").write_text(table(results) + "\n")
    click.echo(table(results))


if __name__ == "__main__":
    main()
