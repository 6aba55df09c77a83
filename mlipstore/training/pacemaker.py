"""Running pacemaker: a complete input.yaml from a TrainingConfig, the fit, .yace and .asi.

mlipstore always writes the whole input.yaml (``cutoff``, ``data``, ``backend``
included) and never uses ``pacemaker -d``, which silently replaces the data section.
``evaluator: tensorpot`` (TensorFlow gradients) trains on all cores, or on a GPU where
TensorFlow sees one; ``pyace`` differentiates numerically and suits only tiny bases.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import yaml
from tqdm import tqdm

from .._workers import usable_cores
from ..errors import ConfigError, PacemakerError

if TYPE_CHECKING:
    from ..params import AceBasisConfig, TrainingConfig

ITERATION_RE = re.compile(r"Iteration\s+#(\d+)")
# pacemaker's train loss at each optimizer iteration: "Iteration   #12   (15 evals):  Loss:
# 3.1e-02" (logged twice, to stdout and stderr), every display_step a "FIT STATS" block
LOSS_RE = re.compile(r"Iteration\s+#(\d+)\s+\(\d+ evals\):\s+Loss:\s+(\S+)"
                     r"|-FIT STATS-+\s+Iteration:\s+#(\d+)\s+Loss:\s+Total:\s+(\S+)")
SECTIONS = ("cutoff", "seed", "metadata", "potential", "data", "fit", "backend")
# input.yaml keys mlipstore writes only when their params.yaml key is set: never from
# pacemaker_extra, so that each setting has one place
CONDITIONAL_KEYS = {
    ("potential", "initial_potential"): "training.initial_potential",
    ("fit", "weighting"): "training.weighting",
    ("fit", "ladder_step"): "training.ladder_step",
    ("fit", "ladder_type"): "training.ladder_type",
    ("fit", "noise_relative_sigma"): "training.noise_relative_sigma",
    ("fit", "noise_absolute_sigma"): "training.noise_absolute_sigma",
    ("fit", "min_relative_train_loss_per_iter"): "training.min_relative_train_loss_per_iter",
    ("fit", "min_relative_test_loss_per_iter"): "training.min_relative_test_loss_per_iter",
    ("fit", "repulsion"): "training.reference_potential (ZBL, zbl.mode core_repulsion)",
    ("backend", "gpu_config"): "training.gpu_config",
    ("data",): "the pipeline (data/export)",
}
TENSORPOT_HINT = (
    "evaluator tensorpot needs TensorFlow and tensorpotential, which this Python ({python}) "
    "lacks ({missing}). Install them as setup.sh does: `pip install -c constraints.txt "
    "-e '.[tensorpot]'` then `pip install --no-deps tensorpotential==0.6.2.1` (or run "
    "`bash setup.sh --install`); or set `training.evaluator: pyace` in params.yaml "
    "(numerical gradients: minutes for a few dozen parameters, days for a production basis)")


def check_evaluator(evaluator: str) -> None:
    """Raise PacemakerError, saying how to install it, if ``evaluator`` cannot run here."""
    if evaluator != "tensorpot":
        return
    missing = []
    for module in ("tensorflow", "tensorpotential"):
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(module)
    if missing:
        raise PacemakerError(TENSORPOT_HINT.format(python=sys.executable,
                                                   missing=", ".join(missing)))


def atoms_per_element(frame) -> dict[str, int]:
    """Atoms of each element in a pacemaker DataFrame, elements sorted by symbol."""
    import numpy as np
    from ase.data import chemical_symbols

    numbers = np.concatenate([atoms.numbers for atoms in frame["ase_atoms"]])
    values, counts = np.unique(numbers, return_counts=True)
    return dict(sorted((chemical_symbols[z], int(n)) for z, n in zip(values, counts,
                                                                     strict=True)))


def check_environments(counts: dict[str, int], basis: AceBasisConfig) -> None:
    """Raise PacemakerError before a fit whose active set cannot be computed:
    pace_activeset needs at least as many atoms (environments) of each element in the
    training set (``counts``) as the basis has functions per element."""
    wanted = basis.number_of_functions_per_element
    short = {element: n for element, n in sorted(counts.items()) if n < wanted}
    if short:
        have = ", ".join(f"{element} {n}" for element, n in short.items())
        raise PacemakerError(
            f"the training set has fewer atoms than the basis has functions per element "
            f"({wanted}): {have}. The active set (pace_activeset, needed for extrapolation "
            f"grades) is then undetermined. Set training.ace_basis_config."
            f"number_of_functions_per_element to at most {min(short.values())}, or add data")


def fit_environment() -> dict[str, str]:
    """The environment pacemaker runs in: TensorFlow's thread pools sized to the cores
    this process may use (unless the user set them), and its C++ log quietened."""
    cores = str(usable_cores())
    env = dict(os.environ)
    env.setdefault("TF_NUM_INTRAOP_THREADS", cores)
    env.setdefault("TF_NUM_INTEROP_THREADS", cores)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    return env


def train_losses(log: Path) -> list[tuple[int, float]]:
    """(iteration, train loss) for every optimizer iteration in a pacemaker log."""
    losses: list[tuple[int, float]] = []
    for match in LOSS_RE.finditer(log.read_text(errors="replace")):
        iteration, loss = (match[1], match[2]) if match[1] else (match[3], match[4])
        point = (int(iteration), float(loss))
        if not losses or losses[-1] != point:
            losses.append(point)
    return losses


def check_extra(config: TrainingConfig) -> None:
    """Refuse ``pacemaker_extra`` keys that are no pacemaker section or that mlipstore
    sets itself from another params.yaml key (ValueError names both)."""
    if not config.pacemaker_extra:
        return
    owned = PacemakerRunner(config.model_copy(update={"pacemaker_extra": {}})
                            )._document("train.pckl.gzip", ["H"])

    def walk(extra: dict, doc, path: tuple[str, ...]) -> None:
        for key, value in extra.items():
            here = (*path, str(key))
            if not path and key not in SECTIONS:
                raise ValueError(f"pacemaker_extra.{key}: not a section of pacemaker's "
                                 f"input.yaml ({', '.join(SECTIONS)})")
            for prefix, owner in CONDITIONAL_KEYS.items():
                if here[:len(prefix)] == prefix:
                    raise ValueError(f"pacemaker_extra.{'.'.join(here)}: set through {owner}")
            inner = doc.get(key) if isinstance(doc, dict) else None
            if isinstance(value, dict) and isinstance(inner, dict):
                walk(value, inner, here)
            elif inner is not None:
                raise ValueError(f"pacemaker_extra.{'.'.join(here)}: mlipstore writes this "
                                 f"key ({inner!r}) from params.yaml's training section; set "
                                 "it there")

    walk(config.pacemaker_extra, owned, ())


def _merge(doc: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _merge(doc[key], value)
        else:
            doc[key] = value
    return doc


def tool(name: str) -> str:
    """Path of a pacemaker command: on PATH, else beside the running Python."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise PacemakerError(f"'{name}' not found: install pacemaker (pip install "
                             "python-ace==0.4.0rc1) or put it on PATH")
    return found


def pace_select(pool: pd.DataFrame, basis_yaml: Path, n: int, active_set: Path | None = None,
                batch_size: int | None = None) -> set[str]:
    """The ``name`` of at most ``n`` rows of ``pool`` (pacemaker's columns, at least
    ``name`` and ``ase_atoms``), chosen D-optimally by pace_select (MaxVol on the
    B-projections of the basis ``basis_yaml``). With ``active_set`` (an .asi) only
    structures that add to it are chosen; ``batch_size`` makes pace_select work through
    the pool in batches. The one place mlipstore runs pace_select."""
    with tempfile.TemporaryDirectory(prefix="mlipstore-pace-select-") as tmp:
        tmp = Path(tmp)
        pool_path, out = tmp / "pool.pkl.gz", tmp / "selected.pkl.gz"  # gzip, by suffix
        pool.to_pickle(pool_path)
        command = [tool("pace_select"), "-p", str(Path(basis_yaml).resolve()), "-m", str(n),
                   "-o", str(out), "-V"]
        if active_set is not None:
            command += ["-a", str(Path(active_set).resolve())]
        if batch_size:
            command += ["-b", str(batch_size)]
        result = subprocess.run([*command, str(pool_path)], cwd=tmp, capture_output=True,
                                text=True)
        if result.returncode != 0 or not out.exists():
            raise PacemakerError(f"pace_select failed (exit {result.returncode}):\n"
                                 f"{(result.stdout + result.stderr)[-2000:]}")
        return set(pd.read_pickle(out)["name"])


def potential_section(basis: AceBasisConfig, elements: Sequence[str]) -> dict:
    """pacemaker's ``potential:`` section for ``elements``."""
    fs_parameters = [1, 1] if basis.ndensity == 1 else [1, 1, 1, 0.5]
    return {
        "deltaSplineBins": 0.001,
        "elements": sorted(elements),
        "embeddings": {"ALL": {"npot": "FinnisSinclairShiftedScaled",
                               "fs_parameters": fs_parameters, "ndensity": basis.ndensity}},
        "bonds": {"ALL": {"radbase": basis.radial_basis, "radparameters": basis.radparameters,
                          "rcut": basis.r_cut, "dcut": basis.dcut,
                          "NameOfCutoffFunction": "cos"}},
        "functions": {
            "number_of_functions_per_element": basis.number_of_functions_per_element,
            "ALL": {"nradmax_by_orders": basis.nradmax_by_orders,
                    "lmax_by_orders": basis.lmax_by_orders},
        },
    }


@dataclass
class TrainResult:
    """Files of a finished fit, all inside ``workdir``."""

    workdir: Path
    input_yaml: Path
    potential_yaml: Path
    potential_yace: Path
    active_set: Path
    log: Path
    train_predictions: Path
    test_predictions: Path | None
    fit_seconds: float  # wall time of pacemaker itself
    activeset_seconds: float  # pace_yaml2yace and pace_activeset


class PacemakerRunner:
    """Fits an ACE potential with the real ``pacemaker`` from a TrainingConfig."""

    def __init__(self, config: TrainingConfig) -> None:
        self.config = config

    def configure_reference(self, ref_type: str | None = None) -> dict:
        """input.yaml settings for the reference potential (default: the config's).

        ZBL in ``core_repulsion`` mode is pacemaker's core repulsion (``fit.repulsion:
        auto``). ``none``, ``LJ`` and ZBL in ``delta`` mode add nothing here: a baseline
        is subtracted from the targets instead (see export.pacemaker_frame).
        """
        ref_type = ref_type or self.config.reference_potential
        if ref_type not in ("none", "ZBL", "LJ"):
            raise ConfigError(f"unknown reference potential {ref_type!r}: use none, ZBL or LJ")
        if ref_type == "ZBL" and self.config.zbl.mode == "core_repulsion":
            return {"fit": {"repulsion": "auto"}}
        return {}

    def generate_input_yaml(self, dataset: str | Path, elements: Sequence[str],
                            test_dataset: str | Path | None = None,
                            initial_potential: str | Path | None = None) -> dict:
        """The complete pacemaker input.yaml as a mapping; ``initial_potential`` (a
        pacemaker .yaml) is the fit's starting point (warm start, upfitting)."""
        doc = self._document(dataset, elements, test_dataset, initial_potential)
        return _merge(doc, self.config.pacemaker_extra)

    def _document(self, dataset: str | Path, elements: Sequence[str],
                  test_dataset: str | Path | None = None,
                  initial_potential: str | Path | None = None) -> dict:
        c = self.config
        data = {"filename": str(Path(dataset).resolve())}
        if test_dataset is not None:
            data["test_filename"] = str(Path(test_dataset).resolve())
        potential = potential_section(c.ace_basis_config, elements)
        if initial_potential is not None:
            potential["initial_potential"] = str(Path(initial_potential).resolve())
        fit = {
            "loss": {"kappa": c.loss_weights.pacemaker_kappa, "L1_coeffs": c.l1_coeff,
                     "L2_coeffs": c.l2_coeff, "w0_rad": c.w0_rad, "w1_rad": c.w1_rad,
                     "w2_rad": c.w2_rad},
            "optimizer": c.optimizer,
            "maxiter": c.max_epochs,
            "fit_cycles": c.fit_cycles,
            "early_stopping_patience": c.early_stopping_patience,
        }
        if c.weighting.policy == "energy_based":
            fit["weighting"] = {"type": "EnergyBasedWeightingPolicy", "seed": c.seed,
                                **c.weighting.energy_based.model_dump(exclude_none=True)}
        if c.ladder_step is not None:
            fit["ladder_step"] = c.ladder_step
            fit["ladder_type"] = c.ladder_type
        for key in ("noise_relative_sigma", "noise_absolute_sigma",
                    "min_relative_train_loss_per_iter", "min_relative_test_loss_per_iter"):
            if getattr(c, key) is not None:
                fit[key] = getattr(c, key)
        backend = {"evaluator": c.evaluator, "batch_size": c.batch_size,
                   "batch_size_reduction": c.batch_size_reduction,
                   "batch_size_reduction_factor": c.batch_size_reduction_factor,
                   "display_step": 50}
        if c.gpu_config is not None:
            backend["gpu_config"] = c.gpu_config.model_dump()
        doc = {"cutoff": c.ace_basis_config.r_cut, "seed": c.seed,
               "metadata": {"origin": "mlipstore"}, "potential": potential, "data": data,
               "fit": fit, "backend": backend}
        for section, values in self.configure_reference().items():
            doc[section].update(values)
        return doc

    def train(self, dataset: str | Path, output_dir: str | Path,
              elements: Sequence[str] | None = None, test_dataset: str | Path | None = None,
              progress: bool = True, initial_potential: str | Path | None = None
              ) -> TrainResult:
        """Fit ``dataset`` (a pacemaker DataFrame this project wrote) in ``output_dir``,
        starting from ``initial_potential`` if given; convert to .yace and compute the
        active set (.asi). Elements default to those in the dataset. Raises
        PacemakerError if the evaluator is not installed, or pacemaker or a tool fails or
        is killed.
        """
        import pandas as pd

        check_evaluator(self.config.evaluator)
        counts = atoms_per_element(pd.read_pickle(dataset, compression="gzip"))
        check_environments(counts, self.config.ace_basis_config)
        elements = list(counts) if elements is None else elements
        work = Path(output_dir)
        work.mkdir(parents=True, exist_ok=True)
        input_yaml = work / "input.yaml"
        doc = self.generate_input_yaml(dataset, elements, test_dataset, initial_potential)
        if initial_potential is not None and not _grows(initial_potential, doc["potential"]):
            # pacemaker extends an initial_potential towards the target basis and fits only
            # what it added, so a parent of the full size would not be fitted at all: the
            # fit continues from the parent's coefficients instead (its basis is the target)
            doc["potential"] = {"filename": doc["potential"]["initial_potential"]}
        input_yaml.write_text(yaml.safe_dump(doc, sort_keys=False))
        log = work / "pacemaker.log"
        started = time.perf_counter()
        self._run_fit(input_yaml, log, progress)
        fitted = time.perf_counter()
        potential = work / "output_potential.yaml"
        if not potential.exists():
            raise PacemakerError(f"pacemaker wrote no potential; see {log}")
        yace, asi = potential.with_suffix(".yace"), potential.with_suffix(".asi")
        _run([tool("pace_yaml2yace"), potential.name, "-o", yace.name], work, log)
        _run([tool("pace_activeset"), "-d", str(Path(dataset).resolve()), potential.name],
             work, log)
        if not asi.exists():
            raise PacemakerError(f"pace_activeset wrote no active set; see {log}")
        test_pred = work / "test_pred.pckl.gzip"
        return TrainResult(work, input_yaml, potential, yace, asi, log,
                           work / "train_pred.pckl.gzip",
                           test_pred if test_pred.exists() else None,
                           fitted - started, time.perf_counter() - fitted)

    def _run_fit(self, input_yaml: Path, log: Path, progress: bool) -> None:
        """Run pacemaker, its output streamed to ``log``, iterations as a progress bar."""
        bar = tqdm(total=self.config.max_epochs, desc="pacemaker", unit="iter",
                   disable=not progress, leave=False)
        with open(log, "ab") as out:
            proc = subprocess.Popen([tool("pacemaker"), input_yaml.name], cwd=input_yaml.parent,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    env=fit_environment())
            try:
                for line in proc.stdout:
                    out.write(line)
                    match = ITERATION_RE.search(line.decode(errors="replace"))
                    if match:
                        bar.update(int(match[1]) - bar.n)
                proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            finally:
                bar.close()
        if proc.returncode != 0:
            how = (f"was killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"failed with exit status {proc.returncode}")
            tail = _tail(log)
            hint = ""
            if re.search(r"No module named '(tensorflow|tensorpotential)", tail):
                hint = "\n" + TENSORPOT_HINT.format(python="pacemaker's", missing="see above")
            raise PacemakerError(f"pacemaker {how}:\n{tail}{hint}")


def _grows(parent: str | Path, potential: dict) -> bool:
    """True if the basis of the ``potential:`` section has more functions than the
    pacemaker potential ``parent`` (upfitting)."""
    from pyace import BBasisConfiguration
    from pyace.multispecies_basisextension import create_multispecies_basis_config

    spec = {k: v for k, v in potential.items() if k != "initial_potential"}
    target = create_multispecies_basis_config(spec)
    return (target.total_number_of_functions
            > BBasisConfiguration(str(parent)).total_number_of_functions)


def _tail(log: Path, chars: int = 3000) -> str:
    text = log.read_text(errors="replace").replace("\r", "\n")
    lines = [ln for ln in text.splitlines() if not ln.startswith("Eval ")]
    return "\n".join(lines)[-chars:]


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        result = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise PacemakerError(f"{Path(cmd[0]).name} failed with exit status "
                             f"{result.returncode}:\n{_tail(log)}")
