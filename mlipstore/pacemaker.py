"""Running pacemaker: a complete input.yaml from a TrainingConfig, the fit, .yace and .asi.

mlipstore always writes the whole input.yaml (``cutoff``, ``data``, ``backend``
included) and never uses ``pacemaker -d``, which silently replaces the data section.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from .config import AceBasisConfig, TrainingConfig

ITERATION_RE = re.compile(r"Iteration\s+#(\d+)")


class PacemakerError(RuntimeError):
    """pacemaker or one of its tools failed; the message holds the end of its log."""


def tool(name: str) -> str:
    """Path of a pacemaker command: on PATH, else beside the running Python."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        raise PacemakerError(f"'{name}' not found: install pacemaker (pip install "
                             "python-ace==0.4.0rc1) or put it on PATH")
    return found


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
        if ref_type == "ZBL" and self.config.zbl.mode == "core_repulsion":
            return {"fit": {"repulsion": "auto"}}
        if ref_type == "ZBL":
            return {}
        if ref_type in ("none", "LJ"):
            return {}
        raise ValueError(f"unknown reference potential {ref_type!r}: use none, ZBL or LJ")

    def generate_input_yaml(self, dataset: str | Path, elements: Sequence[str],
                            test_dataset: str | Path | None = None) -> dict:
        """The complete pacemaker input.yaml as a mapping."""
        c = self.config
        data = {"filename": str(Path(dataset).resolve())}
        if test_dataset is not None:
            data["test_filename"] = str(Path(test_dataset).resolve())
        doc = {
            "cutoff": c.ace_basis_config.r_cut,
            "seed": c.seed,
            "metadata": {"origin": "mlipstore"},
            "potential": potential_section(c.ace_basis_config, elements),
            "data": data,
            "fit": {
                "loss": {"kappa": c.loss_weights.kappa, "L1_coeffs": c.l1_coeff,
                         "L2_coeffs": c.l2_coeff},
                "optimizer": c.optimizer,
                "maxiter": c.max_epochs,
            },
            "backend": {"evaluator": c.evaluator, "batch_size": c.batch_size,
                        "display_step": 50},
        }
        for section, values in self.configure_reference().items():
            doc[section].update(values)
        return doc

    def train(self, dataset: str | Path, output_dir: str | Path,
              elements: Sequence[str] | None = None, test_dataset: str | Path | None = None,
              progress: bool = True) -> TrainResult:
        """Fit ``dataset`` (a pacemaker DataFrame this project wrote) in ``output_dir``;
        convert to .yace and compute the active set (.asi). Elements default to those
        in the dataset. Raises PacemakerError if pacemaker or a tool fails or is killed.
        """
        if elements is None:
            import pandas as pd

            frame = pd.read_pickle(dataset, compression="gzip")
            elements = sorted({s for a in frame["ase_atoms"] for s in a.get_chemical_symbols()})
        work = Path(output_dir)
        work.mkdir(parents=True, exist_ok=True)
        input_yaml = work / "input.yaml"
        input_yaml.write_text(yaml.safe_dump(
            self.generate_input_yaml(dataset, elements, test_dataset), sort_keys=False))
        log = work / "pacemaker.log"
        self._run_fit(input_yaml, log, progress)
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
                           test_pred if test_pred.exists() else None)

    def _run_fit(self, input_yaml: Path, log: Path, progress: bool) -> None:
        """Run pacemaker, its output streamed to ``log``, iterations as a progress bar."""
        bar = tqdm(total=self.config.max_epochs, desc="pacemaker", unit="iter",
                   disable=not progress, leave=False)
        with open(log, "ab") as out:
            proc = subprocess.Popen([tool("pacemaker"), input_yaml.name], cwd=input_yaml.parent,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
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
            raise PacemakerError(f"pacemaker {how}:\n{_tail(log)}")


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
