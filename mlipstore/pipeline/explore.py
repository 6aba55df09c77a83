"""Exploration: molecular dynamics with a generation's potential, watching its
extrapolation grade gamma at every step (the first step of an active-learning generation).

The forces are the deployed model's (ACE plus its baseline); gamma comes from the
B-basis (``.yaml``) and active set (``.asi``), as pyace's calculator and LAMMPS's
``pair_style pace/extrapolation`` compute it. A frame whose largest atomic gamma lies in
(gamma_lower, gamma_upper] is a candidate for DFT; a run stops at gamma above
gamma_upper or on a physical failure, and the reason is recorded, not raised. The runs
go in parallel, one per process; the candidates of all runs are thinned D-optimally
against the active set (``pace_select``), as ``mlipstore screen`` does. Settings:
``config.ExploreParams`` (params.yaml's ``explore``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase import units

from .._io import atomic_write, write_json
from ..errors import ConfigError
from ..params import ExploreParams
from ..potentials.registry import Potential
from ..potentials.screening import pace_select


@dataclass
class Run:
    """One MD run: where it started, what it ran, why it stopped (None: it ran all its
    steps). ``max_gamma``: the largest atomic gamma of each step, step 0 first."""

    index: int
    start_id: str
    temperature_K: float
    pressure_GPa: float | None
    timestep_fs: float
    steps_run: int = 0
    stopped: str | None = None
    max_gamma: list[float] = field(default_factory=list)

    @property
    def stable_time_ps(self) -> float:
        """Simulated time before the stop (the whole run when it did not stop), ps."""
        return self.steps_run * self.timestep_fs / 1000.0


@dataclass
class Exploration:
    """Every run, every collected frame, and the candidates chosen from them."""

    runs: list[Run]
    collected: list[ase.Atoms]
    candidates: list[ase.Atoms]
    settings: ExploreParams

    def summary(self) -> dict:
        """Metrics: steps, stable time (ps), gamma distribution, stop reasons, counts."""
        gammas = np.array([g for run in self.runs for g in run.max_gamma])
        stable = [run.stable_time_ps for run in self.runs]
        s = self.settings
        return {
            "runs": len(self.runs),
            "steps_run": int(sum(run.steps_run for run in self.runs)),
            "stable_time_ps": {"mean": float(np.mean(stable)), "min": float(np.min(stable)),
                               "per_run": stable},
            "stopped": sum(run.stopped is not None for run in self.runs),
            "stop_reasons": [run.stopped for run in self.runs],
            "fraction_above_lower": float(np.mean(gammas > s.gamma_lower)),
            "gamma": {q: float(np.percentile(gammas, p)) for q, p in
                      (("median", 50), ("p90", 90), ("max", 100))},
            "collected": len(self.collected),
            "candidates": len(self.candidates),
            "gamma_lower": s.gamma_lower, "gamma_upper": s.gamma_upper,
        }


def explore(potential: Potential, starts: Sequence[ase.Atoms], settings: ExploreParams,
            workers: int | None = None, progress: bool = False) -> Exploration:
    """Run ``settings.trajectories`` MD runs from ``starts`` (each run takes the next start,
    round robin; ``info["mlipstore_id"]`` names it) and collect and thin the candidates."""
    if not starts:
        raise ConfigError("no starting structures: the store has none matching explore.start")
    conditions = [(t, p) for t in settings.temperatures_K
                  for p in (settings.pressures_GPa if settings.ensemble == "npt" else [None])]
    jobs = []
    for index in range(settings.trajectories):
        atoms = starts[index % len(starts)]
        temperature, pressure = conditions[index % len(conditions)]
        run = Run(index, str(atoms.info.get("mlipstore_id", index % len(starts))),
                  temperature, pressure, settings.timestep_fs)
        jobs.append((potential, atoms, run, settings.model_dump()))
    runs, collected = [], []
    from .._workers import worker_pool

    with worker_pool(min(len(jobs), workers or os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_md_run, *job) for job in jobs]
        done = as_completed(futures)
        if progress:
            from tqdm import tqdm

            done = tqdm(done, total=len(futures), desc="explore", unit="run")
        for future in done:
            run, frames = future.result()
            runs.append(run)
            collected.extend(frames)
    runs.sort(key=lambda r: r.index)
    collected.sort(key=lambda a: (a.info["run"], a.info["step"]))
    candidates = collected
    if len(collected) > settings.max_candidates:
        keep = pace_select(potential, collected, settings.max_candidates)
        candidates = [a for i, a in enumerate(collected) if i in keep]
    return Exploration(runs, collected, candidates, settings)


def pick_starts(store_dir: str | Path, settings: ExploreParams, salt: int = 0
                ) -> list[ase.Atoms]:
    """``settings.trajectories`` structures of the store matching ``settings.start``, at
    random (seed ``settings.seed + salt``), fewer if fewer match."""
    from dataclasses import replace

    from ..store.store import Store

    store = Store(store_dir)
    where = settings.start.scan_filter()
    ids = store.scan(where, columns=["id"]).column("id").to_pylist()
    rng = np.random.default_rng(settings.seed + salt)
    picked = [ids[i] for i in rng.permutation(len(ids))[:settings.trajectories]]
    by_id = {a.info["mlipstore_id"]: a for a in store.iter_atoms(replace(where, ids=picked))}
    return [by_id[i] for i in picked]


def _md_run(potential: Potential, atoms: ase.Atoms, run: Run, settings: dict
            ) -> tuple[Run, list[ase.Atoms]]:
    """One MD run in a worker process (see ``explore``)."""
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.neighborlist import neighbor_list

    s = ExploreParams.model_validate(settings)
    ace = potential.grading_calculator()
    atoms = atoms.copy()
    atoms.calc = potential.calculator(ace)
    rng = np.random.default_rng([s.seed, run.index])
    thermalize_momenta(atoms, run.temperature_K, rng=rng)
    Stationary(atoms)
    dyn = _integrator(atoms, s, run, rng)
    frames: list[ase.Atoms] = []
    last_collected = -s.collect_every_steps
    for _ in dyn.irun(s.steps):
        step = dyn.nsteps
        energy = atoms.get_potential_energy()
        gamma = float(np.max(ace.results["gamma"]))
        run.max_gamma.append(gamma)
        run.stopped = _failure(atoms, energy, gamma, s, run.temperature_K, neighbor_list)
        if run.stopped:
            break
        run.steps_run = step
        if gamma > s.gamma_lower and step - last_collected >= s.collect_every_steps:
            frame = ase.Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
            frame.info.update(gamma=gamma, run=run.index, step=step, start_id=run.start_id,
                              temperature_K=run.temperature_K)
            if run.pressure_GPa is not None:
                frame.info["pressure_GPa"] = run.pressure_GPa
            frames.append(frame)
            last_collected = step
    return run, frames


def _integrator(atoms: ase.Atoms, s: ExploreParams, run: Run, rng: np.random.Generator):
    dt = s.timestep_fs * units.fs
    if s.ensemble == "langevin":
        from ase.md.langevin import Langevin

        return Langevin(atoms, dt, temperature_K=run.temperature_K,
                        friction=s.friction_per_fs / units.fs, fixcm=False, rng=rng)
    if s.ensemble == "nvt":
        from ase.md.nose_hoover_chain import NoseHooverChainNVT

        return NoseHooverChainNVT(atoms, dt, temperature_K=run.temperature_K,
                                  tdamp=s.damping_fs * units.fs)
    from ase.md.nose_hoover_chain import IsotropicMTKNPT

    return IsotropicMTKNPT(atoms, dt, temperature_K=run.temperature_K,
                           pressure_au=run.pressure_GPa * units.GPa,
                           tdamp=s.damping_fs * units.fs, pdamp=10 * s.damping_fs * units.fs)


def _failure(atoms: ase.Atoms, energy: float, gamma: float, s: ExploreParams,
             temperature_K: float, neighbor_list) -> str | None:
    """Why the run must stop at this step, or None."""
    if not (np.isfinite(energy) and np.isfinite(atoms.get_forces()).all()
            and np.isfinite(gamma)):
        return "non-finite energy, forces or gamma"
    if gamma > s.gamma_upper:
        return f"gamma {gamma:.3g} above gamma_upper {s.gamma_upper:g}"
    close = neighbor_list("d", atoms, s.min_distance_A)
    if len(close):
        return f"atoms {float(close.min()):.3f} Å apart (min_distance_A {s.min_distance_A:g})"
    temperature = atoms.get_temperature()
    if temperature > s.max_temperature_factor * temperature_K:
        return (f"temperature {temperature:.0f} K above {s.max_temperature_factor:g} times "
                f"the target {temperature_K:g} K")
    return None


def write_exploration(exploration: Exploration, out: str | Path) -> dict:
    """``out``/candidates.extxyz (gamma, run, step, start_id, temperature_K in each
    frame's info), runs.json (every run, with its gamma per step), gamma.png, and
    explore.json (the summary, written last: its presence marks a finished exploration).
    Returns the summary."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "candidates.extxyz") as fh:
        ase.io.write(fh, exploration.candidates, format="extxyz")
    with atomic_write(out / "runs.json") as fh:
        json.dump([{**asdict(run), "stable_time_ps": run.stable_time_ps}
                   for run in exploration.runs], fh)
    _plot(exploration, out / "gamma.png")
    summary = exploration.summary()
    write_json(out / "explore.json", summary)
    return summary


def read_candidates(out: str | Path) -> list[ase.Atoms]:
    """The candidates an exploration wrote to ``out``."""
    path = Path(out) / "candidates.extxyz"
    return ase.io.read(path, ":", format="extxyz") if path.stat().st_size else []


def _plot(exploration: Exploration, path: Path) -> None:
    """Largest gamma per step of every run (log scale, the thresholds dashed) and the
    distribution of all steps' gamma."""
    from matplotlib.figure import Figure

    s = exploration.settings
    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2, width_ratios=[2, 1])
    for run in exploration.runs:
        time_ps = np.arange(len(run.max_gamma)) * run.timestep_fs / 1000.0
        left.plot(time_ps, run.max_gamma, lw=0.8,
                  label=f"run {run.index}: {run.temperature_K:g} K"
                        + (" (stopped)" if run.stopped else ""))
    gammas = np.array([g for run in exploration.runs for g in run.max_gamma])
    left.axhline(s.gamma_lower, color="tab:orange", ls="--", lw=1)
    left.axhline(s.gamma_upper, color="tab:red", ls="--", lw=1)
    left.set_yscale("log")
    left.set(xlabel="time (ps)", ylabel="largest atomic gamma",
             title=f"{len(exploration.runs)} runs; dashed: gamma_lower, gamma_upper")
    left.legend(fontsize=7, loc="upper left")
    finite = gammas[np.isfinite(gammas) & (gammas > 0)]
    if finite.size:
        bins = np.geomspace(finite.min(), max(finite.max(), s.gamma_upper), 40)
        right.hist(finite, bins=bins, color="tab:blue")
        right.set_xscale("log")
    right.axvline(s.gamma_lower, color="tab:orange", ls="--", lw=1)
    right.axvline(s.gamma_upper, color="tab:red", ls="--", lw=1)
    right.set(xlabel="largest atomic gamma per step", ylabel="steps",
              title=f"{100 * np.mean(gammas > s.gamma_lower):.1f}% above gamma_lower")
    fig.tight_layout()
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
