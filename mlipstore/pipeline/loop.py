"""The active-learning loop: explore -> label -> train, one generation after another.

A generation ends when its potential is trained, tested on the holdout set, explored
(``explore.py``), and committed with the tag gen-NN: the commit holds the pipeline's
results and ``explore/gen_NN/`` (candidates, runs, gamma plot, summary), and
``explore/loop.json`` holds the generation's figures, so ``dvc metrics diff gen-01
gen-03`` compares generations. The next generation labels the candidates (``oracle.py``;
each label lands in ``explore/gen_NN/labels/`` as it finishes) and trains on them,
warm-starting from the last potential (``training.initial_potential: previous``).

Every step leaves files that say it is done, so a killed loop run again continues where
it stopped: a finished exploration is not repeated, finished labels are kept, and the
same labelled structures land in the same inbox file (the store keeps each once).
Like DP-GEN (explore with the model, select by its uncertainty, label on a cluster,
train), with ACE's extrapolation grade as the uncertainty.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

import ase
import ase.io

from .._io import atomic_write, write_json
from ..errors import FileError
from ..layout import Layout
from ..params import Params, load_params
from ..potentials.registry import Potential, list_potentials
from .cycle import DFTResult, TrainingCycle, results_from_files
from .explore import explore, pick_starts, read_candidates, write_exploration
from .oracle import CalculatorOracle, dask_executor, label, write_dft_inputs
from .training_data import TrainingData

log = logging.getLogger(__name__)


@dataclass
class Generation:
    """What one generation of the loop gave."""

    generation: int
    potential: Path
    holdout: dict | None
    exploration: dict
    stop: str | None = None  # why the loop stopped after it (None: it went on)


class ActiveLearningLoop:
    """The loop in the project at ``root``, with params.yaml's ``loop`` and ``explore``
    settings. ``oracle``/``executor`` replace the configured ones (Python callers)."""

    def __init__(self, root: str | Path = ".", params: Params | None = None,
                 oracle: Callable[[ase.Atoms], DFTResult] | None = None,
                 executor: Executor | None = None, commit: bool = True,
                 progress: bool = False) -> None:
        self.layout = Layout(root)
        self.params = params or load_params(self.layout.params)
        loop = self.params.loop
        if oracle is None and loop.oracle != "external":
            oracle = CalculatorOracle(loop.oracle, loop.oracle_kwargs)
        self.oracle = oracle
        self.executor = executor
        self.commit = commit
        self.progress = progress
        self.phase = TrainingCycle(self.layout.root, commit=False)

    def run(self, generations: int | None = None) -> list[Generation]:
        """Go on until generation ``generations`` (default: params.yaml's
        ``loop.generations``) is explored, or a stop criterion holds first."""
        last = generations or self.params.loop.generations
        potentials = list_potentials(self.layout.models)
        # the first generation: the seed data of the inbox
        potential = potentials[-1] if potentials else self.phase.run([])
        done = []
        while True:
            report = self._finish(potential)
            done.append(report)
            report.stop = self._stop(report, last)
            if report.stop:
                log.info("loop stops after generation %02d: %s", report.generation,
                         report.stop)
                return done
            results = self._label(potential.generation)
            potential = self.phase.run(results)

    def _finish(self, potential: Potential) -> Generation:
        """Test, explore (unless done before) and commit the generation."""
        g = potential.generation
        out = self.layout.exploration(g)
        if not (out / "explore.json").exists():
            s = self.params.explore
            starts = pick_starts(self.layout.store, s, salt=g)
            write_exploration(explore(potential, starts, s, self.params.loop.workers,
                                      progress=self.progress), out)
        summary = _read_json(out / "explore.json")
        holdout = None
        if self.params.loop.holdout:
            holdout = holdout_errors(potential, self.layout.root / self.params.loop.holdout)
            write_json(out / "holdout.json", holdout)
        report = Generation(g, potential.path, holdout, summary)
        write_json(self.layout.loop_metrics, {
            "generation": g, "holdout": holdout or {},
            "explore": {k: summary[k] for k in ("fraction_above_lower", "candidates",
                                                "collected", "stopped", "steps_run")}
            | {"stable_time_ps": summary["stable_time_ps"]["mean"],
               "gamma_max": summary["gamma"]["max"]},
        })
        write_history(self.layout)
        if self.commit:
            self.phase.commit_generation(g, [self.layout.explore_dir],
                                         what="mlipstore loop")
        return report

    def _stop(self, report: Generation, last: int) -> str | None:
        summary = report.exploration
        target = self.params.loop.target_stable_time_ps
        if summary["candidates"] == 0:
            return (f"exploration found no frame with gamma above "
                    f"{summary['gamma_lower']:g}")
        if target is not None and summary["stable_time_ps"]["min"] >= target:
            return f"every exploration run was stable for {target:g} ps"
        if report.generation >= last:
            return f"generation {last:02d} reached"
        if self.oracle is None:
            inputs = self.layout.exploration(report.generation) / "dft"
            write_dft_inputs(read_candidates(self.layout.exploration(report.generation)),
                             inputs)
            return (f"waiting for DFT: run it in {inputs}/task_*, then 'mlipstore cycle "
                    f"{inputs}/task_*/OUTCAR' (or your code's outputs) and 'mlipstore loop'")
        return None

    def _label(self, generation: int) -> list[DFTResult]:
        """Label the generation's candidates; each result is kept on disk as it finishes,
        so a second call labels only what the first did not."""
        out = self.layout.exploration(generation)
        candidates = read_candidates(out)
        labels = out / "labels"
        labels.mkdir(exist_ok=True)
        todo = [i for i in range(len(candidates))
                if not (labels / f"{i:04d}.extxyz").exists()
                and not (labels / f"{i:04d}.failed").exists()]
        executor = self.executor
        if executor is None and self.params.loop.dask_scheduler:
            executor = dask_executor(self.params.loop.dask_scheduler)
        for j, result in label([candidates[i] for i in todo], self.oracle, executor,
                               self.params.loop.workers, self.params.loop.label_timeout_s,
                               self.progress):
            index = todo[j]
            if result.success:
                with atomic_write(labels / f"{index:04d}.extxyz") as fh:
                    ase.io.write(fh, result.labelled(), format="extxyz")
            else:
                with atomic_write(labels / f"{index:04d}.failed") as fh:
                    fh.write(result.error + "\n")
        failed = [DFTResult(candidates[i], success=False,
                            error=(labels / f"{i:04d}.failed").read_text().strip())
                  for i in range(len(candidates)) if (labels / f"{i:04d}.failed").exists()]
        return failed + results_from_files(sorted(labels.glob("*.extxyz")),
                                           TrainingData(self.layout.root))


def holdout_errors(potential: Potential, path: Path) -> dict:
    """``metrics.summarize`` of the deployed model (total energies) on the labelled
    structures of ``path``: energy (meV/atom) and force (meV/Å) RMSE and MAE."""
    from ..ingestion.formats import iread
    from ..training.metrics import calculator_errors

    configs = []
    for frame in iread(path):
        if frame.config is None:
            raise FileError(f"{path}: frame {frame.index}: {frame.error}")
        configs.append(frame.config)
    return calculator_errors(potential.calculator(), [c.to_atoms() for c in configs],
                             [c.energy for c in configs], [c.forces for c in configs])


HISTORY_COLUMNS = ("generation", "energy_rmse", "forces_rmse", "fraction_above_lower",
                   "stable_time_ps", "candidates")


def write_history(layout: Layout) -> None:
    """``explore/history.csv`` (a row per generation) and ``explore/history.png``: holdout
    errors, the fraction of exploration steps above gamma_lower, and stable MD time."""
    rows = []
    for folder in sorted(layout.explore_dir.glob("gen_*")):
        if not (folder / "explore.json").exists():
            continue
        summary = _read_json(folder / "explore.json")
        holdout = _read_json(folder / "holdout.json") if (folder / "holdout.json").exists() \
            else {}
        rows.append({"generation": int(folder.name[4:]),
                     "energy_rmse": holdout.get("energy_rmse", float("nan")),
                     "forces_rmse": holdout.get("forces_rmse", float("nan")),
                     "fraction_above_lower": summary["fraction_above_lower"],
                     "stable_time_ps": summary["stable_time_ps"]["mean"],
                     "candidates": summary["candidates"]})
    with atomic_write(layout.explore_dir / "history.csv") as fh:
        writer = csv.DictWriter(fh, HISTORY_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    _plot_history(rows, layout.explore_dir / "history.png")


def _plot_history(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    gens = [r["generation"] for r in rows]
    fig = Figure(figsize=(12, 3.6))
    axes = fig.subplots(1, 3)
    panels = [(("energy_rmse", "energy (meV/atom)"), ("forces_rmse", "forces (meV/Å)")),
              (("fraction_above_lower", "steps above gamma_lower"),),
              (("stable_time_ps", "mean stable MD time (ps)"),)]
    titles = ["holdout RMSE", "exploration: extrapolating", "exploration: stable time"]
    for ax, lines, title in zip(axes, panels, titles, strict=True):
        for key, name in lines:
            ax.plot(gens, [r[key] for r in rows], "o-", label=name)
        ax.set(xlabel="generation", title=title)
        ax.set_xticks(gens)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text())
