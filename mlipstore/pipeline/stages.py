"""The stages of dvc.yaml: ingest -> export -> select -> train. Each is a thin shell over
TrainingData, PacemakerRunner and the registry; ``mlipstore stage NAME`` runs one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pandas as pd

from .. import _git
from .._io import atomic_write, file_sha256, write_json
from ..errors import StageError
from ..params import Params, TrainingConfig
from ..potentials.registry import Potential, parent_for, register
from ..store.method import UNKNOWN
from ..training.export import write_pickle_gzip
from ..training.metrics import summarize, write_dimer_curves, write_parity
from ..training.pacemaker import PacemakerRunner, TrainResult, atoms_per_element
from .training_data import TrainingData, read_own_pickle

log = logging.getLogger(__name__)


PARAMS_VALID = "params.yaml is valid (checked by 'mlipstore stage validate')\n"


def stage_validate(project: TrainingData, progress: bool = True) -> str:
    """The whole params.yaml was validated when ``project`` loaded it (ConfigError names
    every bad key). The marker's content never changes, so the stages after it re-run
    only for their own parameters, but a typo anywhere stops ``dvc repro`` here, before
    any stage has removed its outputs."""
    with atomic_write(project.layout.params_valid) as fh:
        fh.write(PARAMS_VALID)
    return f"{project.layout.params} is valid"


def stage_ingest(project: TrainingData, progress: bool = True) -> str:
    report = project.ingest(progress=progress)
    lines = report.rejection_lines()
    if not report.ok:
        raise StageError("ingest rejected input (fix or remove these files in "
                         f"{project.layout.inbox}):\n" + "\n".join(lines) +
                         f"\n{report.summary()}")
    return f"{report.summary()}; {report.already_ingested} file(s) already ingested"


def stage_export(project: TrainingData, progress: bool = True) -> str:
    summary = project.export_for_pacemaker(progress=progress)
    write_json(project.layout.export_summary, summary)
    return (f"exported {summary['n_pool']} training-pool and {summary['n_test']} test "
            f"configurations ({' '.join(summary['elements'])})")


def stage_select(project: TrainingData, progress: bool = True) -> str:
    s = project.params.select
    ids = project.select_training_set()
    write_json(project.layout.selection, {
        "method": s.method, "n_requested": s.n_structures, "n_selected": len(ids),
        "seed": s.seed, "ids": ids,
    })
    return f"selected {len(ids)} structures ({s.method})"


def stage_train(project: TrainingData, progress: bool = True) -> str:
    """Fit the selected structures, register the next generation, write metrics/plots."""
    layout, params = project.layout, project.params
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
    elements = list(atoms_per_element(train))
    methods = _methods(export, train, test)
    if methods["train"].get(UNKNOWN):
        log.warning("%d of %d training structures state no DFT method (see the lineage's "
                    "methods)", methods["train"][UNKNOWN], len(train))
    dataset = _ids_digest([*pool["name"], *test["name"]])
    start = initial_potential(params.training, dataset, elements, layout.models)
    if start["reason"]:
        log.warning("cold start: %s", start["reason"])
    runner = PacemakerRunner(params.training)
    with tempfile.TemporaryDirectory(prefix="mlipstore-train-") as tmp:
        work = Path(tmp)
        write_pickle_gzip(_for_pacemaker(train, params.training), work / "train.pckl.gzip")
        test_path = None
        if not test.empty:
            test_path = work / "test.pckl.gzip"
            write_pickle_gzip(_for_pacemaker(test, None), test_path)
        result = runner.train(work / "train.pckl.gzip", work / "fit", elements, test_path,
                              progress=progress, initial_potential=start["path"])
        rest = pool[~pool["name"].isin(set(selection["ids"]))]
        metrics = {"train": summarize(read_own_pickle(result.train_predictions)),
                   "test": _test_metrics(result.test_predictions),
                   "rest": _rest_metrics(result.potential_yace, rest, elements)}
        lineage = _lineage(project, export, selection, train, test, elements, dataset, start,
                           result, metrics, methods)
        potential = register({".yace": result.potential_yace, ".yaml": result.potential_yaml,
                              ".asi": result.active_set, ".log": result.log},
                             lineage, layout.models)
        _write_plots(layout.plots, result.train_predictions, result.test_predictions,
                     export.get("baseline"))
        write_dimer_curves(potential, layout.plots, params.training.ace_basis_config.r_cut,
                           training_structures=train["ase_atoms"])
    write_json(layout.metrics, {"generation": potential.generation, **metrics})
    t = metrics["train"]
    parent = start["parent"]
    began = (f"warm start from {parent.get('name', parent.get('path'))}" if parent
             else "cold start")
    return (f"registered {potential.path} ({began}; train: energy RMSE "
            f"{t['energy_rmse']:.1f} meV/atom, forces RMSE {t['forces_rmse']:.1f} meV/Å)")


def initial_potential(config: TrainingConfig, dataset_sha256: str, elements: list[str],
                      models: Path) -> dict:
    """Where the fit starts: ``path`` (a pacemaker .yaml, or None for a cold start), the
    ``mode`` of params.yaml, the ``parent`` generation with the sha256 of its .yaml, and
    the ``reason`` of a cold start where ``previous`` found no usable parent.

    A parent must have the same elements, cutoff and radial basis; the number of
    functions may grow (pacemaker extends the parent's basis: upfitting)."""
    mode = config.initial_potential
    out = {"mode": mode, "path": None, "parent": None, "reason": None}
    if mode == "none":
        return out
    if mode != "previous":
        path = Path(mode)
        if not path.is_file():
            raise StageError(f"training.initial_potential {mode!r}: no such file")
        out.update(path=path.resolve(), parent={"path": mode, "sha256": file_sha256(path)})
        return out
    parent = parent_for(dataset_sha256, models)
    reason = _unusable_parent(parent, config, elements)
    if reason:
        out["reason"] = reason
        return out
    out.update(path=parent.basis_yaml.resolve(), parent={
        "generation": parent.generation, "name": parent.path.stem,
        "sha256": file_sha256(parent.basis_yaml)})
    return out


def _unusable_parent(parent: Potential | None, config: TrainingConfig,
                     elements: list[str]) -> str | None:
    if parent is None:
        return "initial_potential previous: no earlier generation trained on other data"
    if parent.meta["elements"] != elements:
        return (f"initial_potential previous: {parent.path.stem} has elements "
                f"{parent.meta['elements']}, this training set {elements}")
    theirs = parent.meta["params"]["training"]["ace_basis_config"]
    ours = config.ace_basis_config.model_dump(mode="json")
    changed = [k for k in ("r_cut", "dcut", "radial_basis", "radparameters", "ndensity")
               if theirs.get(k) != ours[k]]
    if theirs.get("number_of_functions_per_element", 0) > ours["number_of_functions_per_element"]:
        changed.append("number_of_functions_per_element (fewer now)")
    if changed:
        return (f"initial_potential previous: {parent.path.stem} has another basis "
                f"({', '.join(changed)})")
    return None


def _for_pacemaker(frame: pd.DataFrame, config: TrainingConfig | None) -> pd.DataFrame:
    """The DataFrame pacemaker reads: without the store's ``tags`` and method
    fingerprints; with the sources' weights only for ``weighting.policy: source``
    (pacemaker uses ``w_energy`` and ``w_forces`` instead of any policy where they are
    present); with pacemaker's per-structure ``w_factor`` from ``weighting.by_tag``
    where any is given."""
    drop = ["tags", "method_fingerprint"]
    if config is None or config.weighting.policy != "source":
        drop += ["w_energy", "w_forces", "virial_weight"]
    out = frame.drop(columns=drop, errors="ignore")
    by_tag = config.weighting.by_tag if config is not None else {}
    if by_tag:
        tags = frame["tags"] if "tags" in frame else pd.Series([[]] * len(frame))
        out["w_factor"] = [math.prod(by_tag.get(t, 1.0) for t in row) for row in tags]
    return out


def _test_metrics(path: Path | None) -> dict:
    if path is None:
        return {"energy_rmse": None, "energy_mae": None, "forces_rmse": None,
                "forces_mae": None, "n_structures": 0}
    return summarize(read_own_pickle(path))


def _rest_metrics(yace: Path, rest: pd.DataFrame, elements: list[str]) -> dict:
    """Metrics on the pool structures the selection left out (maxvol picks the most unusual
    ones for training, so train errors run high; the rest shows the typical ones), from the
    fitted .yace (without reference energies: targets are energy_corrected); structures
    with an element the potential was not fitted to are left out."""
    fitted = rest[rest["ase_atoms"].map(lambda a: set(a.get_chemical_symbols()) <= set(elements))]
    if fitted.empty:
        return _test_metrics(None)
    from pyace import PyACECalculator

    from ..training.metrics import calculator_errors

    return calculator_errors(PyACECalculator(str(yace)), fitted["ase_atoms"],
                             fitted["energy_corrected"], fitted["forces"])


def _write_plots(plots: Path, train_pred: Path, test_pred: Path | None,
                 baseline: dict | None = None) -> None:
    """Parity data for ``dvc plots`` (CSV, drawn by Vega in a browser) and the same as
    PNGs (``plots/parity_energy.png``, ``parity_forces.png``, ``errors.png``), which
    need neither a browser nor a network."""
    from ..training.metrics import write_parity_images

    preds = {}
    for split, path in (("train", train_pred), ("test", test_pred)):
        pred = read_own_pickle(path) if path is not None else pd.DataFrame(
            columns=["forces", "forces_pred", "energy_corrected", "energy_pred"])
        write_parity(pred, plots / f"energy_{split}.csv", plots / f"forces_{split}.csv")
        preds[split] = pred
    write_parity_images(plots, preds["train"], preds["test"], baseline)


def _ids_digest(ids: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _methods(export: dict, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """The DFT methods of the training and test structures: counts per fingerprint
    ("unknown": none stated), each fingerprint's settings, and the export's choice."""
    def counts(frame: pd.DataFrame) -> dict[str, int]:
        prints = frame.get("method_fingerprint", pd.Series([None] * len(frame)))
        return {str(k): int(v) for k, v in prints.fillna(UNKNOWN).value_counts().items()}

    chosen = export.get("methods", {})
    train_counts, test_counts = counts(train), counts(test)
    used = set(train_counts) | set(test_counts)
    return {"train": train_counts, "test": test_counts,
            "settings": {k: v["settings"] for k, v in chosen.get("summary", {}).items()
                         if k in used and k != UNKNOWN},
            "allow_mixed": chosen.get("allow_mixed", False), "chosen": chosen.get("chosen")}


def _lineage(project: TrainingData, export: dict, selection: dict, train: pd.DataFrame,
             test: pd.DataFrame, elements: list[str], dataset_sha256: str, start: dict,
             result: TrainResult, metrics: dict, methods: dict) -> dict:
    train_ids, test_ids = list(train["name"]), list(test["name"])
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "store": {"path": str(project.layout.store.relative_to(project.layout.root)),
                  "content_hash": export["store_content_hash"]},
        "dataset_sha256": dataset_sha256,
        "train": {"n_structures": len(train_ids), "ids_sha256": _ids_digest(train_ids),
                  "ids": train_ids},
        "test": {"n_structures": len(test_ids), "ids_sha256": _ids_digest(test_ids),
                 "ids": test_ids},
        "elements": elements,  # the potential's, in its order (LAMMPS pair_coeff)
        "reference_energies": export["reference_energies"],
        "baseline": export["baseline"],
        "methods": methods,  # the DFT methods of the data (store.method)
        "selection": {k: v for k, v in selection.items() if k != "ids"},
        "params": project.params.model_dump(mode="json"),
        "initial_potential": {k: v for k, v in start.items() if k != "path"},
        "input_yaml": result.input_yaml.read_text(),
        "git": _git.state(project.layout.root),
        "versions": {name: _version(name) for name in
                     ("mlipstore", "python-ace", "ase", "tensorflow", "tensorpotential")},
        "timings": {"fit_s": round(result.fit_seconds, 2),
                    "activeset_s": round(result.activeset_seconds, 2)},
        "metrics": metrics,
    }


def _version(package: str) -> str | None:
    try:
        return version(package)
    except PackageNotFoundError:
        return None


STAGES = {
    "validate": stage_validate,
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
    return STAGES[name](TrainingData(root, params), progress)

