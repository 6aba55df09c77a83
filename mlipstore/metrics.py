"""Fit metrics and parity data from pacemaker's prediction pickles.

pacemaker writes ``train_pred.pckl.gzip`` (and ``test_pred.pckl.gzip`` when a test set
is given) after the fit, with ``energy_corrected``/``energy_pred`` (eV) and
``forces``/``forces_pred`` (eV/Angstrom) per structure. Energy errors are per atom
(meV/atom); force errors are over all Cartesian components (meV/Angstrom), as pacemaker
reports them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

PARITY_POINTS = 5000  # force components kept for a plot: enough to see, small to diff


def errors(pred: pd.DataFrame) -> dict[str, np.ndarray]:
    """Reference and predicted energy per atom (eV/atom) and force components (eV/Å)."""
    n_atoms = np.array([len(np.asarray(f).reshape(-1, 3)) for f in pred["forces"]], dtype=int)
    return {
        "energy_dft": pred["energy_corrected"].to_numpy(dtype=float) / n_atoms,
        "energy_ace": pred["energy_pred"].to_numpy(dtype=float) / n_atoms,
        "forces_dft": np.concatenate([np.ravel(f) for f in pred["forces"]] or [np.empty(0)]),
        "forces_ace": np.concatenate([np.ravel(f) for f in pred["forces_pred"]]
                                     or [np.empty(0)]),
    }


def summarize(pred: pd.DataFrame) -> dict[str, float | int]:
    """RMSE and MAE of energy (meV/atom) and forces (meV/Å) and the structure count."""
    e = errors(pred)
    de = 1000 * (e["energy_ace"] - e["energy_dft"])
    df = 1000 * (e["forces_ace"] - e["forces_dft"])
    return {
        "energy_rmse": float(np.sqrt(np.mean(de**2))),
        "energy_mae": float(np.mean(np.abs(de))),
        "forces_rmse": float(np.sqrt(np.mean(df**2))),
        "forces_mae": float(np.mean(np.abs(df))),
        "n_structures": len(pred),
    }


def write_parity(pred: pd.DataFrame, energy_csv: Path, forces_csv: Path,
                 seed: int = 0) -> None:
    """Parity data for ``dvc plots``: DFT vs ACE energy per atom and force components."""
    e = errors(pred)
    _write_csv(energy_csv, ["dft", "ace"], zip(e["energy_dft"], e["energy_ace"], strict=True))
    keep = np.arange(len(e["forces_dft"]))
    if len(keep) > PARITY_POINTS:
        keep = np.sort(np.random.default_rng(seed).choice(keep, PARITY_POINTS, replace=False))
    _write_csv(forces_csv, ["dft", "ace"],
               zip(e["forces_dft"][keep], e["forces_ace"][keep], strict=True))


def write_dimer_curves(potential, plots: Path, r_max: float, r_min: float = 0.5,
                       points: int = 120) -> None:
    """Energy of every element pair's dimer from r_min to r_max (Angstrom), as the
    deployed model (ACE + baseline) gives it: ``plots/dimer/A-B.csv`` for ``dvc plots``
    and ``plots/dimer.png`` to look at. Short-range behaviour is where a fit without a
    repulsive reference fails."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    elements = potential.meta["elements"]
    r = np.linspace(r_min, r_max, points)
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, a in enumerate(elements):
        for b in elements[i:]:
            energy = potential.dimer_energies(a, b, r)
            _write_csv(plots / "dimer" / f"{a}-{b}.csv", ["r", "energy"],
                       zip(r, energy, strict=True))
            ax.plot(r, energy - energy[-1], label=f"{a}-{b}")
    baseline = potential.meta.get("baseline")
    reference = potential.meta["params"]["training"]["reference_potential"]
    ax.set(xlabel="distance (Å)", ylabel="E(r) - E(r_max) (eV)", yscale="symlog",
           title=f"{potential.path.stem}: dimers (reference {reference}"
                 f"{', delta' if baseline else ''})")
    ax.axhline(0, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plots / "dimer.png", dpi=100)
    plt.close(fig)


def _write_csv(path: Path, header: list[str], rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows((f"{a:.8g}", f"{b:.8g}") for a, b in rows)


def plot_distributions(table, path: Path) -> None:
    """Histograms of a store (or a filtered part): energy per atom (force-consistent,
    eV/atom), largest force (eV/Å), atoms per configuration, configurations per chemical
    system. Written as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_atoms = table.column("n_atoms").to_numpy()
    energy = table.column("free_energy").to_numpy(zero_copy_only=False)
    energy = np.where(np.isnan(energy), table.column("energy").to_numpy(), energy)
    systems = table.column("chemical_system").value_counts().to_pylist()
    fig, axes = plt.subplots(2, 2, figsize=(9, 6.5))
    axes[0, 0].hist(energy / n_atoms, bins=50)
    axes[0, 0].set(xlabel="energy per atom (eV/atom)", ylabel="configurations")
    axes[0, 1].hist(table.column("max_force").to_numpy(), bins=50)
    axes[0, 1].set(xlabel="largest atomic force (eV/Å)", yscale="log")
    axes[1, 0].hist(n_atoms, bins=min(50, len(np.unique(n_atoms))))
    axes[1, 0].set(xlabel="atoms per configuration", ylabel="configurations")
    systems = sorted(systems, key=lambda s: -s["counts"])[:20]
    axes[1, 1].barh([s["values"] for s in systems], [s["counts"] for s in systems])
    axes[1, 1].set(xlabel="configurations", title="chemical systems (top 20)")
    fig.suptitle(f"{table.num_rows} configurations, {int(n_atoms.sum())} atoms")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
