"""The training cycle of an active-learning loop: DFT results in, a new potential out.

``TrainingCycle.run`` adds the successful DFT results of a generation to the inbox (in
``data/raw/gen_NN/``, so they are tagged ``gen_NN``), reproduces the DVC pipeline (the
result is exactly what ``dvc repro`` gives) and records the new generation in the
``CycleState`` file, which changes only after a successful training: a crash or a
failed fit leaves it as it was, and running the same phase again completes it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import ase
import numpy as np
import yaml
from ase.calculators.singlepoint import SinglePointDFTCalculator

from .. import _git
from .._io import atomic_write
from ..errors import CycleError
from ..layout import Layout
from ..potentials.registry import Potential, list_potentials, next_generation
from ..store.configuration import Configuration, FrameError
from .training_data import TrainingData

log = logging.getLogger(__name__)
STATE_FILE = "workflow_state.yaml"


@dataclass
class DFTResult:
    """One DFT calculation that came back: its structure and labels (eV, eV/Å, eV/Å^3
    Voigt), or ``success=False`` with the reason it failed."""

    atoms: ase.Atoms
    energy: float | None = None
    forces: np.ndarray | None = None
    stress: np.ndarray | None = None
    free_energy: float | None = None
    success: bool = True
    error: str = ""

    def labelled(self) -> ase.Atoms:
        """The structure with its labels attached (as a SinglePointDFTCalculator)."""
        atoms = self.atoms.copy()
        results = {k: v for k, v in (("energy", self.energy), ("forces", self.forces),
                                     ("stress", self.stress),
                                     ("free_energy", self.free_energy)) if v is not None}
        atoms.calc = SinglePointDFTCalculator(atoms, **results)
        return atoms


@dataclass
class CycleState:
    """What the loop has produced so far; a small YAML file meant to be read by people."""

    generation: int = 0
    current_potential: str | None = None
    dataset_hash: str | None = None
    history: list[dict] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | Path) -> CycleState:
        path = Path(path)
        if not path.exists():
            return cls()
        return cls(**(yaml.safe_load(path.read_text()) or {}))

    def save(self, path: str | Path) -> None:
        """Replace the file atomically (write, fsync, rename)."""
        with atomic_write(path) as fh:
            yaml.safe_dump(asdict(self), fh, sort_keys=False)


def results_from_files(paths: Iterable[str | Path], project: TrainingData) -> list[DFTResult]:
    """DFTResults from DFT output files: each valid frame succeeds; a frame or file that
    cannot be used is a failed result carrying the reason (key maps from params.yaml)."""
    from ..ingestion.formats import FileError, iread

    results = []
    for path in map(Path, paths):
        try:
            for frame in iread(path, key_map=project.key_map_for(path)):
                if frame.config is None:
                    results.append(DFTResult(ase.Atoms(), success=False,
                                             error=f"{path}: frame {frame.index}: {frame.error}"))
                else:
                    c = frame.config
                    results.append(DFTResult(c.to_atoms(), c.energy, c.forces, c.stress,
                                             c.free_energy))
        except (FileError, OSError) as err:
            results.append(DFTResult(ase.Atoms(), success=False, error=f"{path}: {err}"))
    return results


class TrainingCycle:
    """One generation of the loop in the project at ``root`` (see module docs)."""

    def __init__(self, root: str | Path = ".", commit: bool = True) -> None:
        self.layout = Layout(root)
        self.commit = commit

    @property
    def state_path(self) -> Path:
        return self.layout.root / STATE_FILE

    def run(self, results: Iterable[DFTResult]) -> Potential:
        """Add the successful results, reproduce the pipeline, register the generation."""
        if not (self.layout.root / ".dvc").is_dir() or not (self.layout.root / "dvc.yaml").exists():
            raise CycleError(f"{self.layout.root} is not an mlipstore project with DVC "
                             "(no .dvc/ or dvc.yaml): create one with 'mlipstore init'")
        state = CycleState.load(self.state_path)
        good, failed = self._sort(results)
        if failed and not good:
            raise CycleError(f"none of the {len(failed)} DFT results can be used; first: "
                             f"{failed[0]}")
        # the registry numbers generations; its next number names the data folder
        folder = f"gen_{next_generation(self.layout.models):02d}"
        added = TrainingData(self.layout.root).add_data(good, folder=folder) if good else []
        before = [p.meta for p in list_potentials(self.layout.models)]
        self._reproduce()
        potentials = list_potentials(self.layout.models)
        # a generation registered by a run killed before it was recorded is this one's
        if not potentials or (potentials[-1].meta in before
                              and potentials[-1].generation <= state.generation):
            raise CycleError("dvc repro trained no new potential: no new data and no "
                             "changed settings since the last generation")
        potential = potentials[-1]
        generation = potential.generation
        metrics = potential.meta["metrics"]
        state.generation = generation
        state.current_potential = str(potential.path.relative_to(self.layout.root))
        state.dataset_hash = potential.meta["store"]["content_hash"]
        state.history.append({
            "generation": generation,
            "potential": state.current_potential,
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "added": len(good), "failed": len(failed),
            "dataset_hash": state.dataset_hash,
            "energy_rmse_test": metrics["test"]["energy_rmse"],
            "forces_rmse_test": metrics["test"]["forces_rmse"],
        })
        state.save(self.state_path)
        if self.commit:
            self.commit_generation(generation, added)
        return potential

    def _sort(self, results: Iterable[DFTResult]) -> tuple[list[ase.Atoms], list[str]]:
        """Labelled structures of the successful results; reasons for the others."""
        good, failed = [], []
        for index, result in enumerate(results):
            if not result.success:
                failed.append(f"result {index}: DFT failed: {result.error or 'no reason'}")
                continue
            atoms = result.labelled()
            try:
                Configuration.from_atoms(atoms)
            except FrameError as err:
                failed.append(f"result {index}: unusable: {err}")
                continue
            good.append(atoms)
        for reason in failed:
            log.warning("skipped %s", reason)
        return good, failed

    def _reproduce(self) -> None:
        """``dvc repro``; a failed stage is a CycleError (the state file is unchanged)."""
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        # DVC resolves stage paths against the working directory
        cwd = os.getcwd()
        os.chdir(self.layout.root)
        try:
            with Repo(".") as repo:
                repo.reproduce()
        except DvcException as err:
            raise CycleError(f"the pipeline failed; the cycle state ({STATE_FILE}) is "
                             f"unchanged: {err}") from err
        finally:
            os.chdir(cwd)

    def commit_generation(self, generation: int, added: Iterable[Path] = (),
                          what: str = "mlipstore cycle") -> None:
        """Commit the generation and tag it gen-NN, so that `dvc metrics diff gen-01 gen-03`
        compares generations. The commit holds what the pipeline recorded (see
        ``_pipeline_paths``), the cycle state file and the new inbox files: nothing else of
        the project, untracked or staged, goes in. An existing tag is never moved."""
        root = self.layout.root.resolve()
        if not _git.is_repo(root):
            return
        wanted = {os.path.relpath(p, root)
                  for p in [*self._pipeline_paths(), self.state_path.resolve(),
                            *(Path(a).resolve() for a in added)]}
        head = _git.commit_paths(root, sorted(wanted), f"{what}: generation {generation:02d}")
        if head is None:
            log.warning("generation %02d: nothing to commit", generation)
            return
        tag = f"gen-{generation:02d}"
        tagged = _git.tag(root, tag, head)
        if tagged is None:
            log.warning("generation %02d is committed (%s) but could not be tagged %s",
                        generation, head[:12], tag)
        elif tagged != head:
            log.warning("generation %02d is committed (%s) but not tagged: tag %s already "
                        "names commit %s, and is left there; 'git tag -f %s %s' moves it",
                        generation, head[:12], tag, tagged[:12], tag, head[:12])

    def _pipeline_paths(self) -> list[Path]:
        """What a run of the pipeline leaves for git to hold: each dvc.yaml with its
        dvc.lock, the outputs DVC does not cache (metrics, plots, markers), the .gitignore
        files DVC keeps beside the outputs it does cache, and the inputs no stage produces
        (params.yaml, the inbox), as absolute paths inside the project."""
        from dvc.repo import Repo

        root = self.layout.root.resolve()
        paths: set[Path] = set()
        with Repo(str(root)) as repo:
            stages = list(repo.index.stages)
            produced = {Path(out.fs_path) for stage in stages for out in stage.outs}
            for stage in stages:
                dvcfile = Path(stage.dvcfile.path)
                paths.add(dvcfile)
                if dvcfile.suffix == ".yaml":
                    paths.add(dvcfile.with_suffix(".lock"))
                for out in stage.outs:
                    path = Path(out.fs_path)
                    paths.add(path.parent / ".gitignore" if out.use_cache else path)
                for dep in stage.deps:
                    path = Path(dep.fs_path)
                    if not any(path == out or out in path.parents for out in produced):
                        paths.add(path)
        return [p for p in paths if root in p.parents]


# the original design's names
TrainingPhase = TrainingCycle
WorkflowState = CycleState
