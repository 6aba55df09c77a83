"""The stages of dvc.yaml: ingest -> export -> select -> train. Each is a thin shell over
DatasetBuilder, PacemakerRunner and the registry; ``mlipstore stage NAME`` runs one.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from .config import Params
from .dataset import DatasetBuilder, read_own_pickle, write_json
from .export import write_pickle_gzip
from .metrics import summarize, write_dimer_curves, write_parity
from .pacemaker import PacemakerRunner
from .potentials import register


class StageError(RuntimeError):
    """A stage could not finish; the message says why. Nothing was registered."""


def stage_ingest(builder: DatasetBuilder, progress: bool = True) -> str:
    report = builder.ingest(progress=progress)
    lines = report.rejection_lines()
    if not report.ok:
        raise StageError("ingest rejected input (fix or remove these files in "
                         f"{builder.layout.inbox}):\n" + "\n".join(lines) +
                         f"\n{report.summary()}")
    return f"{report.summary()}; {report.already_ingested} file(s) already ingested"


def stage_export(builder: DatasetBuilder, progress: bool = True) -> str:
    summary = builder.export_for_pacemaker(progress=progress)
    write_json(builder.layout.export_summary, summary)
    return (f"exported {summary['n_pool']} training-pool and {summary['n_test']} test "
            f"configurations ({' '.join(summary['elements'])})")


def stage_select(builder: DatasetBuilder, progress: bool = True) -> str:
    s = builder.params.select
    ids = builder.select_active_set()
    write_json(builder.layout.selection, {
        "method": s.method, "n_requested": s.n_structures, "n_selected": len(ids),
        "seed": s.seed, "ids": ids,
    })
    return f"selected {len(ids)} structures ({s.method})"


def stage_train(builder: DatasetBuilder, progress: bool = True) -> str:
    """Fit the selected structures, register the next generation, write metrics/plots."""
    layout, params = builder.layout, builder.params
    selection = json.loads(layout.selection.read_text())
    export = json.loads(layout.export_summary.read_text())
    pool = read_own_pickle(layout.pool)
    test = read_own_pickle(layout.test)
    train = pool[pool["name"].isin(set(selection["ids"]))]
    if train.empty:
        raise StageError("the selection is empty: nothing to train on")
    baseline = params.training.baseline()
    if export.get("baseline") != (baseline.describe() if baseline is not None else None):
        raise StageError("the exported targets were made with another reference potential "
                         "than params.yaml's training section: run the export stage first")
    elements = sorted({s for atoms in train["ase_atoms"] for s in atoms.get_chemical_symbols()})
    runner = PacemakerRunner(params.training)
    with tempfile.TemporaryDirectory(prefix="mlipstore-train-") as tmp:
        work = Path(tmp)
        write_pickle_gzip(train, work / "train.pckl.gzip")
        test_path = None if test.empty else layout.test
        result = runner.train(work / "train.pckl.gzip", work / "fit", elements, test_path,
                              progress=progress)
        metrics = {"train": summarize(read_own_pickle(result.train_predictions)),
                   "test": _test_metrics(result.test_predictions)}
        lineage = _lineage(builder, export, selection, train, test, result.input_yaml, metrics)
        potential = register({".yace": result.potential_yace, ".yaml": result.potential_yaml,
                              ".asi": result.active_set, ".log": result.log},
                             lineage, layout.models)
        _write_plots(layout.plots, result.train_predictions, result.test_predictions)
        write_dimer_curves(potential, layout.plots, params.training.ace_basis_config.r_cut)
    write_json(layout.metrics, {"generation": potential.generation, **metrics})
    t = metrics["train"]
    return (f"registered {potential.path} (train: energy RMSE {t['energy_rmse']:.1f} meV/atom,"
            f" forces RMSE {t['forces_rmse']:.1f} meV/Å)")


def _test_metrics(path: Path | None) -> dict:
    if path is None:
        return {"energy_rmse": None, "energy_mae": None, "forces_rmse": None,
                "forces_mae": None, "n_structures": 0}
    return summarize(read_own_pickle(path))


def _write_plots(plots: Path, train_pred: Path, test_pred: Path | None) -> None:
    for split, path in (("train", train_pred), ("test", test_pred)):
        pred = read_own_pickle(path) if path is not None else pd.DataFrame(
            columns=["forces", "forces_pred", "energy_corrected", "energy_pred"])
        write_parity(pred, plots / f"energy_{split}.csv", plots / f"forces_{split}.csv")


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _lineage(builder: DatasetBuilder, export: dict, selection: dict, train: pd.DataFrame,
             test: pd.DataFrame, input_yaml: Path, metrics: dict) -> dict:
    train_ids, test_ids = list(train["name"]), list(test["name"])
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "store": {"path": str(builder.layout.store.relative_to(builder.layout.root)),
                  "content_hash": export["store_content_hash"]},
        "train": {"n_structures": len(train_ids), "ids_sha256": _ids_digest(train_ids),
                  "ids": train_ids},
        "test": {"n_structures": len(test_ids), "ids_sha256": _ids_digest(test_ids),
                 "ids": test_ids},
        "elements": export["elements"],
        "reference_energies": export["reference_energies"],
        "baseline": export["baseline"],
        "selection": {k: v for k, v in selection.items() if k != "ids"},
        "params": builder.params.model_dump(mode="json"),
        "input_yaml": input_yaml.read_text(),
        "git": _git_state(builder.layout.root),
        "versions": {name: _version(name) for name in ("mlipstore", "python-ace", "ase")},
        "metrics": metrics,
    }


def _git_state(root: Path) -> dict:
    def git(*args: str) -> str | None:
        result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


STAGES = {
    "ingest": stage_ingest,
    "export": stage_export,
    "select": stage_select,
    "train": stage_train,
}


def run_stage(name: str, root: str | Path = ".", params: Params | None = None,
              progress: bool = True) -> str:
    """Run one stage of the pipeline in the project at ``root``; returns a summary line."""
    if name not in STAGES:
        raise StageError(f"unknown stage {name!r}: one of {', '.join(STAGES)}")
    return STAGES[name](DatasetBuilder(root, params), progress)

